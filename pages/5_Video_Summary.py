"""Video summary from a URL or a file: chunk descriptions, chapters with times, short and detailed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import FramescopeError
from core.format import format_timestamp
from core.media import probe_video, transcode_for_browser
from core.summarize import CONTEXT, INDEPENDENT, descriptions_csv, summarize_video, to_markdown
from ui.components import ProgressBar, plain, show_error
from ui.page import start_page
from ui.resources import get_indexer, get_llm, get_vlm

VIDEO_TYPES = ["mp4", "m4v", "mov", "avi", "mkv", "webm"]

page = start_page("Video summary")
settings = page.settings
library = page.library
try:
    vlm, llm = get_vlm(), get_llm()
except FramescopeError as exc:
    show_error(exc)
    st.stop()
st.caption(f"Frames described by {plain(vlm.name)}; summary written by {plain(llm.name)}.")

source = st.radio("Video", ["From a URL", "Upload a file"], horizontal=True)
url, upload = "", None
if source == "From a URL":
    url = st.text_input(
        "Video URL (YouTube or any site yt-dlp supports; one video, no playlists)",
        placeholder="https://www.youtube.com/watch?v=…",
    )
else:
    upload = st.file_uploader("Video file", type=VIDEO_TYPES, key="summary-upload")
c1, c2, c3, c4 = st.columns(4)
chunk_seconds = c1.number_input(
    "Seconds per chunk", 5.0, 600.0, 30.0, 5.0, help="In scene mode: the longest chunk."
)
frames_per_chunk = c2.number_input("Frames per chunk", 1, 16, 4)
by_scene = c3.toggle(
    "Chunk by scene", help="One chunk per shot (shots longer than the chunk length are split)."
)
mode = c4.radio(
    "Chunk descriptions",
    [INDEPENDENT, CONTEXT],
    format_func={INDEPENDENT: "independent", CONTEXT: "with previous context"}.get,
    horizontal=True,
)
st.caption(
    "Leaving the page stops the summary; chunk descriptions so far are kept and the next run continues from them."
)

if st.button(
    "Summarize", type="primary", icon=":material/summarize:", disabled=not (url.strip() or upload)
):
    try:
        with ProgressBar("Summary") as progress:
            title, cues, label = "", (), ""
            if url.strip():
                from core.fetch import fetch_video

                fetched = fetch_video(url.strip(), settings, job=progress.job.stage("download"))
                path, title, cues, label = fetched.path, fetched.title, fetched.cues, url.strip()
            else:
                path, label = get_indexer().save_upload(upload.name, upload.getvalue()), upload.name
                title = upload.name.rsplit(".", 1)[0]
            limits = settings.video
            info = probe_video(Path(path), limits)
            st.session_state["summary"] = summarize_video(
                Path(path),
                info,
                vlm,
                llm,
                library,
                title=title,
                source=label,
                cues=cues,
                chunk_seconds=chunk_seconds,
                frames_per_chunk=int(frames_per_chunk),
                scenes=by_scene,
                mode=mode,
                job=progress.job,
            )
            st.session_state["summary_path"] = str(path)
            st.session_state["summary_seek"] = 0.0
    except FramescopeError as exc:
        show_error(exc)

summary = st.session_state.get("summary")
if summary is not None:
    st.subheader("Summary")
    st.text(summary.title)
    st.markdown(plain(summary.short))
    path = Path(st.session_state["summary_path"])
    try:
        limits = settings.video
        playable = transcode_for_browser(probe_video(path, limits), settings.home / "playback")
        st.video(str(playable), start_time=int(st.session_state.get("summary_seek", 0.0)))
    except FramescopeError as exc:
        show_error(exc)
    st.subheader("Chapters")
    for i, chapter in enumerate(summary.chapters):
        left, right = st.columns([1, 5])
        if left.button(
            f"{format_timestamp(chapter.start)}-{format_timestamp(chapter.end)}",
            key=f"chapter-{i}",
            icon=":material/play_arrow:",
        ):
            st.session_state["summary_seek"] = chapter.start
            st.rerun()
        right.markdown(f"**{plain(chapter.title)}** · {plain(chapter.summary)}")
    with st.expander(f"Chunk descriptions ({len(summary.descriptions)})"):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "from": format_timestamp(d.start),
                        "to": format_timestamp(d.end),
                        "description": d.text,
                    }
                    for d in summary.descriptions
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    seconds = " · ".join(f"{stage} {value:.1f} s" for stage, value in summary.seconds.items())
    st.caption(f"Mode: {summary.mode} · compute: {seconds}")
    e1, e2, e3, _ = st.columns([1, 1, 1, 3])
    e1.download_button(
        "Markdown", to_markdown(summary), "summary.md", "text/markdown", icon=":material/download:"
    )
    e2.download_button(
        "JSON",
        json.dumps(summary.to_dict(), indent=2),
        "summary.json",
        "application/json",
        icon=":material/download:",
    )
    e3.download_button(
        "Chunks CSV",
        descriptions_csv(summary),
        "chunks.csv",
        "text/csv",
        icon=":material/download:",
    )
