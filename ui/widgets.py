"""Shared inputs of the video pages: one video source picker (upload, library, web link) and the
player that plays from a moment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.errors import FramescopeError
from core.format import format_duration, format_timestamp
from core.media import VIDEO_EXTENSIONS, probe_video, transcode_for_browser
from core.types import MediaRecord
from ui.components import ProgressBar, plain, show_error
from ui.resources import get_indexer, get_library, get_settings

VIDEO_TYPES = sorted(e.lstrip(".") for e in VIDEO_EXTENSIONS)
UPLOAD, LIBRARY, LINK = "Upload", "Library", "Web link"
LINK_COLLECTION = "web"  # where videos fetched from links join the library


@dataclass(frozen=True)
class ChosenVideo:
    """The video a page works on, wherever it came from."""

    path: Path  # the file on this machine (an upload kept in the data directory, or a download)
    name: str  # what the user calls it: the upload's file name, the library name, the page title
    media_id: int | None = None  # its row in the library, when it is in the library
    url: str | None = None  # the web link it was fetched from

    @property
    def key(self) -> str:
        """Identifies the choice: results made for another choice are not shown for this one."""
        return f"{self.media_id}:{self.path}"


def video_label(record: MediaRecord) -> str:
    """How a library video is listed: its name, where it is, and how long it is."""
    where = record.collection
    length = f" · {format_duration(record.duration)}" if record.duration else ""
    return f"{record.name} · {where}{length}"


def video_source(
    key: str, *, sources: tuple[str, ...] = (UPLOAD, LIBRARY, LINK), label: str = "Video"
) -> ChosenVideo | None:
    """Upload · Library · Web link: the video the user picks, or None until they pick one.

    A link goes through the safe fetch (refusals, caps, progress with Stop, cached download) and
    joins the library with its link, title and duration; a library video is used as it is.
    """
    source = st.segmented_control(
        label, list(sources), default=sources[0], key=f"{key}-source", required=True
    )
    library = get_library()
    if source == UPLOAD:
        upload = st.file_uploader(
            "Upload a video", type=VIDEO_TYPES, key=f"{key}-upload", label_visibility="collapsed"
        )
        if upload is None:
            return None
        try:
            path = get_indexer().save_upload(upload.name, upload.getvalue())
        except FramescopeError as exc:
            show_error(exc)
            return None
        return ChosenVideo(path, upload.name)
    if source == LIBRARY:
        videos = library.catalog.videos()
        if not videos:
            st.info(
                "No videos in the library yet: upload one, fetch one from a link, or add some "
                "on the **Frame search** page."
            )
            return None
        by_id = {v.id: v for v in videos}
        chosen = st.selectbox(
            "Library video",
            list(by_id),
            format_func=lambda i: video_label(by_id[i]),
            key=f"{key}-library",
            label_visibility="collapsed",
        )
        record = by_id[chosen]
        return ChosenVideo(Path(record.path), record.name, record.id, getattr(record, "url", None))
    return _from_link(key)


def _from_link(key: str) -> ChosenVideo | None:
    """A web link, fetched when the user presses Enter or Fetch; the video joins the library."""
    with st.form(f"{key}-link-form", border=False):
        url = st.text_input(
            "Web link", placeholder="https://www.youtube.com/watch?v=...", key=f"{key}-url"
        )
        fetch = st.form_submit_button("Fetch", icon=":material/download:")
    fetched = st.session_state.get(f"{key}-fetched")
    if fetch and url.strip():
        try:
            with ProgressBar("Fetching") as progress:
                record = get_indexer().index_link(url.strip(), LINK_COLLECTION, job=progress.job)
            fetched = st.session_state[f"{key}-fetched"] = record.id
        except FramescopeError as exc:
            st.session_state.pop(f"{key}-fetched", None)
            show_error(exc)
            return None
    if fetched is None:
        return None
    record = next((v for v in get_library().catalog.videos() if v.id == fetched), None)
    if record is None:
        return None
    st.caption(f"Fetched: {plain(video_label(record))}")
    return ChosenVideo(Path(record.path), record.name, record.id, getattr(record, "url", None))


def play(path: Path, start: float = 0.0, *, title: str = "") -> None:
    """Play a video from a moment, in a dialog in front of the page (in view, playing, muted so
    the browser allows it to start), transcoded to H.264 for the browser when needed."""
    settings = get_settings()

    @st.dialog(title or "Play", width="large")
    def player() -> None:
        try:
            playable = transcode_for_browser(
                probe_video(Path(path), settings.video), settings.home / "playback"
            )
        except FramescopeError as exc:
            show_error(exc)
            return
        st.video(str(playable), start_time=int(start), autoplay=True, muted=True)
        st.caption(f"From {format_timestamp(start)}")

    player()
