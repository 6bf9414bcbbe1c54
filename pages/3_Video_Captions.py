"""Video captions: a caption per sampled frame, segments, one overall caption, files to keep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.captions import (
    caption_video,
    default_export_dir,
    export_captions,
    paragraph_caption,
    zip_folder,
)
from core.errors import FramescopeError
from core.format import format_timestamp
from core.indexing import upload_name
from core.types import Sampling
from ui.components import ProgressBar, plain, show_error
from ui.page import start_page
from ui.resources import get_captioner, get_embedder, get_indexer, get_llm
from ui.widgets import show_video_error, video_source


def count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


page = start_page("Video captions")
settings = page.settings
library = page.library
try:
    get_embedder()
    captioner = get_captioner()
except FramescopeError as exc:
    show_error(exc)
    st.stop()

chosen = video_source("captions")

with st.form("caption-form", border=False):
    c1, c2, c3, c4 = st.columns(4)
    every = c1.number_input(
        "Seconds between frames",
        0.1,
        3600.0,
        2.0,
        0.5,
        help="A 10 s clip gets 5 frames; longer videos are capped below.",
    )
    max_frames = c2.number_input(
        "Most frames",
        1,
        2000,
        120,
        10,
        help="Longer videos get an evenly wider interval: 120 frames cover an hour every 30 s.",
    )
    scenes = c3.toggle("One frame per shot (scene mode)")
    prompt = c4.text_input(
        "Caption prompt (optional)",
        placeholder="a picture of",
        help="Captions continue this text.",
    )
    st.caption(
        "Changing the sampling of a video already in the library samples it again. Leaving the "
        "page stops captioning; captions so far are kept and the next run continues."
    )
    start = st.form_submit_button(
        "Caption video", type="primary", icon=":material/subtitles:", disabled=chosen is None
    )

if start and chosen is not None:
    sampling = Sampling(every=every, max_frames=int(max_frames), scenes=scenes, dedup=1.0)
    # A new run replaces what was shown: its results, or its error, and nothing older.
    for name in ("captions", "caption_folder", "caption_paragraph"):
        st.session_state.pop(name, None)
    # A library video is captioned where it is; an upload joins the "videos" collection.
    record = next((v for v in library.catalog.videos() if v.id == chosen.media_id), None)
    collection, stored_as = (
        (record.collection, record.name) if record else ("videos", upload_name(chosen.name))
    )
    try:
        captioner.check_prompt(prompt)  # too long for the model: said before any work
        with ProgressBar("Captioning") as progress:
            captions = caption_video(
                library,
                get_indexer(),
                captioner,
                chosen.path,
                sampling=sampling,
                prompt=prompt.strip(),
                collection=collection,
                name=stored_as,
                job=progress.job,
            )
        st.session_state["captions"] = {"video": chosen.key, "result": captions}
    except FramescopeError as exc:
        show_video_error(FramescopeError(str(exc).replace(stored_as, chosen.name)), chosen)

made = st.session_state.get("captions")
# Results belong to the video they were made for: shown only while it is the chosen one.
result = made["result"] if made and chosen is not None and made["video"] == chosen.key else None
if result is not None:
    st.subheader("Caption")
    st.text(result.overall)
    st.caption(
        f"{plain(result.video)} · {count(len(result.frames), 'frame')} · "
        f"{count(len(result.segments), 'segment')} · chosen as {result.overall_method}"
    )
    if result.note:
        st.warning(plain(chosen.mention(result.note)))
    if st.button(
        "Write a paragraph with the text model",
        icon=":material/notes:",
        help="The text LLM (the one the summary page uses) turns the segments into a short paragraph.",
    ):
        try:
            st.session_state["caption_paragraph"] = paragraph_caption(get_llm(), result)
        except FramescopeError as exc:
            show_error(exc)
    if paragraph := st.session_state.get("caption_paragraph"):
        st.markdown(plain(paragraph))
    st.subheader("Segments")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "from": format_timestamp(s.start),
                    "to": format_timestamp(s.end),
                    "frames": s.frames,
                    "caption": s.text,
                }
                for s in result.segments
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    st.subheader("Frames")
    columns = st.columns(4)
    for i, frame in enumerate(result.frames):
        with columns[i % 4]:
            st.image(frame.image, width="stretch")
            st.caption(f"{format_timestamp(frame.timestamp)}")
            st.text(frame.text)
    st.subheader("Keep the results")
    if st.button("Save results folder", icon=":material/save:"):
        try:
            st.session_state["caption_folder"] = str(
                export_captions(result, default_export_dir(settings.home, result))
            )
        except FramescopeError as exc:
            show_error(exc)
    if folder := st.session_state.get("caption_folder"):
        st.success(f"Saved frames, captions.json, captions.srt and captions.vtt to {plain(folder)}")
        st.download_button(
            "Download as zip",
            zip_folder(Path(folder)),
            f"{Path(folder).name}.zip",
            "application/zip",
            icon=":material/download:",
        )
