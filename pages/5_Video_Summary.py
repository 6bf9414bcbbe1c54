"""Video summary from a URL or a file: chunk descriptions, chapters with times, short and detailed."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.errors import FramescopeError
from core.format import format_timestamp
from core.media import probe_video
from core.summarize import CONTEXT, INDEPENDENT, descriptions_csv, summarize_video, to_markdown
from ui.components import ProgressBar, plain, show_error
from ui.page import start_page
from ui.resources import get_llm, get_vlm
from ui.widgets import play, show_video_error, video_source

page = start_page("Video summary")
settings = page.settings
library = page.library
try:
    vlm, llm = get_vlm(), get_llm()
except FramescopeError as exc:
    show_error(exc)
    st.stop()
st.caption(f"Frames described by {plain(vlm.name)}; summary written by {plain(llm.name)}.")

chosen = video_source("summary")
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

if (
    st.button("Summarize", type="primary", icon=":material/summarize:", disabled=chosen is None)
    and chosen is not None
):
    # A new run replaces what was shown: its summary, or its error, and nothing older.
    st.session_state.pop("summary", None)
    try:
        with ProgressBar("Summary") as progress:
            # A file's title is its name without the extension; a link's, its page's title.
            title = chosen.name if chosen.url else chosen.name.rsplit(".", 1)[0]
            cues: tuple = ()
            if chosen.url:  # fetched from a link: its title and subtitles, kept with the download
                from core.fetch import fetch_video  # yt-dlp: loaded only when needed

                try:
                    fetched = fetch_video(chosen.url, settings, job=progress.job.stage("download"))
                    title, cues = fetched.title, fetched.cues
                except FramescopeError:
                    pass  # the video is here; the summary goes on without the page's subtitles
            info = probe_video(chosen.path, settings.video)
            summary = summarize_video(
                chosen.path,
                info,
                vlm,
                llm,
                library,
                title=title,
                source=chosen.url or chosen.name,
                cues=cues,
                chunk_seconds=chunk_seconds,
                frames_per_chunk=int(frames_per_chunk),
                scenes=by_scene,
                mode=mode,
                job=progress.job,
            )
        st.session_state["summary"] = {"video": chosen.key, "result": summary}
    except FramescopeError as exc:
        show_video_error(exc, chosen)

made = st.session_state.get("summary")
# A summary belongs to the video it was made for: shown only while that video is chosen.
summary = made["result"] if made and chosen is not None and made["video"] == chosen.key else None
if summary is not None:
    st.subheader("Summary")
    st.text(summary.title)
    st.markdown(plain(summary.short))
    st.subheader("Chapters")
    for i, chapter in enumerate(summary.chapters):
        left, right = st.columns([2, 5])  # room for the times on the button
        if left.button(
            f"{format_timestamp(chapter.start)}-{format_timestamp(chapter.end)}",
            key=f"chapter-{i}",
            icon=":material/play_arrow:",
            help="Play the video from here",
        ):
            play(chosen.path, chapter.start, title=f"{summary.title} · {chapter.title}")
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
    exports = st.container(horizontal=True)  # each button as wide as its label
    exports.download_button(
        "Markdown", to_markdown(summary), "summary.md", "text/markdown", icon=":material/download:"
    )
    exports.download_button(
        "JSON",
        json.dumps(summary.to_dict(), indent=2),
        "summary.json",
        "application/json",
        icon=":material/download:",
    )
    exports.download_button(
        "Chunks CSV",
        descriptions_csv(summary),
        "chunks.csv",
        "text/csv",
        icon=":material/download:",
    )
