"""Shared inputs of the video pages: one video source picker (upload, library, web link) and the
player that plays from a moment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.errors import FramescopeError
from core.format import format_duration, format_timestamp
from core.indexing import link_step_text
from core.jobs import Job, Step
from core.media import VIDEO_EXTENSIONS, probe_video, transcode_for_browser
from core.types import MediaRecord, Sampling
from ui.components import ProgressBar, index_report, plain, show_error
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
        """Identifies the choice: results made for another choice are not shown for this one.
        The file, not the library row: sampling a video again (as captioning does) renews its row."""
        return str(self.path)

    def mention(self, message: str) -> str:
        """A message about this video with the video named as the user knows it: the stored
        file's path ("/home/me/.local/share/framescope/uploads/15bd…_clip.mp4", or any relative
        spelling of it) becomes its name ("clip.mp4")."""
        path = Path(self.path)
        forms = {str(path), os.path.abspath(path), str(path.resolve())}
        parts = [re.escape(f) for f in sorted(forms, key=len, reverse=True)]
        parts.append(r"[^\s'\"]*/" + re.escape(path.name))  # another spelling of the same file
        if path.name not in self.name:
            parts.append(re.escape(path.name))
        return re.sub("|".join(parts), lambda _: self.name, message)


def show_video_error(exc: FramescopeError, video: ChosenVideo | None) -> None:
    """An error about a chosen video, naming it as the user knows it (never a stored path)."""
    if video is None:
        show_error(exc)
    else:
        show_error(FramescopeError(video.mention(str(exc))))


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
        saved = st.session_state.get(f"{key}-saved")
        if saved is not None and saved[0] == upload.file_id and saved[1].exists():
            path = saved[1]  # kept on an earlier run: not read and hashed again
        else:
            try:
                path = get_indexer().save_upload(upload.name, upload.getvalue())
            except FramescopeError as exc:
                show_error(exc)
                return None
            st.session_state[f"{key}-saved"] = (upload.file_id, path)
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

                def show(step: Step) -> None:
                    progress.bar.progress(  # a page's title is shown as text, never Markdown
                        step.fraction or 0.0, text=f"Fetching · {plain(link_step_text(step))}"
                    )

                job = Job(show, lambda: progress.job.stopped)
                record = get_indexer().index_link(url.strip(), LINK_COLLECTION, job=job)
            fetched = st.session_state[f"{key}-fetched"] = record.url
        except FramescopeError as exc:
            st.session_state.pop(f"{key}-fetched", None)
            show_error(exc)
            return None
    if fetched is None:
        return None
    # Found by its link: the row is the same video even after it was sampled again (a new id).
    found = get_library().catalog.media(collection=LINK_COLLECTION, url=fetched)
    record = next((v for v in found if v.kind == "video" and v.status != "failed"), None)
    if record is None:
        return None
    st.caption(f"Fetched: {plain(video_label(record))}")
    return ChosenVideo(Path(record.path), record.name, record.id, record.url)


def add_from_link(key: str, collection: str, *, sampling: Sampling | None = None) -> None:
    """A form (Enter submits) that adds the videos of a web link to a collection: one video, or
    the first FRAMESCOPE_FETCH_MAX_ITEMS of a playlist or channel, each fetched safely and
    indexed with its title and link. A progress bar with Stop while it runs, a line per video
    ("2/3 <title>: downloading…", then done or failed with the reason), then the report."""
    most = get_settings().fetch.max_items
    with st.form(f"{key}-form", border=False):
        url = st.text_input(
            "Video, playlist or channel link",
            placeholder="https://www.youtube.com/playlist?list=...",
            key=f"{key}-url",
            help=f"A playlist or channel adds its first {most} videos (FRAMESCOPE_FETCH_MAX_ITEMS). "
            "A video added before from the same link is not fetched again.",
        )
        submitted = st.form_submit_button("Add from link", icon=":material/add_link:")
    if submitted and url.strip():
        st.session_state.pop(f"{key}-done", None)
        lines: dict[str, str] = {}  # "2/3" -> that video's latest line
        try:
            with ProgressBar("Adding from the link") as progress:
                box = st.container()  # a line per video, under the bar (they stay after it)
                slots: dict[str, object] = {}

                def show(step: Step) -> None:
                    progress.bar.progress(step.fraction or 0.0, text=plain(step.message))
                    item = _ITEM.match(step.message)
                    if item is None:
                        return
                    lines[item.group(1)] = step.message
                    if item.group(1) not in slots:
                        slots[item.group(1)] = box.empty()
                    slots[item.group(1)].text(step.message)

                job = Job(show, lambda: progress.job.stopped)
                report = get_indexer().index_links(
                    [url.strip()], collection, sampling=sampling, job=job
                )
            st.session_state[f"{key}-done"] = (list(lines.values()), report)
            index_report(report)
        except FramescopeError as exc:
            show_error(exc)
    elif done := st.session_state.get(f"{key}-done"):  # what the last run did, still shown
        shown, report = done
        for line in shown:
            st.text(line)
        index_report(report)


_ITEM = re.compile(r"^(\d+/\d+) ")  # the "2/3 " that starts the line of one video of a link


def play(path: Path, start: float = 0.0, *, title: str = "") -> None:
    """Play a video from a moment, in a dialog in front of the page (in view, playing, muted so
    the browser allows it to start), transcoded to H.264 for the browser when needed."""
    settings = get_settings()

    @st.dialog(plain(title) or "Play", width="large")  # a file name or a model's words: as text
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
