"""Video question answering: chat about a video (or a few images); answers show their frames."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.errors import FramescopeError
from core.format import format_timestamp
from core.media import probe_video, transcode_for_browser
from core.qa import FRAMES, QUESTION, UNIFORM, ask, images_as_frames
from ui.components import plain, show_error
from ui.page import start_page
from ui.resources import get_embedder, get_indexer, get_vlm

VIDEO_TYPES = ["mp4", "m4v", "mov", "avi", "mkv", "webm"]
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]

page = start_page("Ask about a video")
settings = page.settings
library = page.library
try:
    embedder = get_embedder()
    vlm = get_vlm()
except FramescopeError as exc:
    show_error(exc)
    st.stop()
st.caption(f"Model: {plain(vlm.name)}")

videos = library.catalog.videos()
source = st.radio(
    "Ask about",
    ["A video from the library", "An uploaded video", "Images"],
    horizontal=True,
    index=0 if videos else 1,
)
path = None
uploads = []
if source == "A video from the library":
    if videos:
        record = st.selectbox(
            "Video", videos, format_func=lambda v: f"{v.name} ({format_timestamp(v.duration or 0)})"
        )
        path = Path(record.path)
    else:
        st.info("No videos in the library yet: upload one, or add some on the Frame search page.")
elif source == "An uploaded video":
    upload = st.file_uploader("Video file", type=VIDEO_TYPES, key="qa-video")
    if upload is not None:
        path = get_indexer().save_upload(upload.name, upload.getvalue())
else:
    uploads = (
        st.file_uploader(
            "Images (a scene to describe)",
            type=IMAGE_TYPES,
            accept_multiple_files=True,
            key="qa-images",
        )
        or []
    )

c1, c2 = st.columns(2)
n_frames = c1.slider("Frames per question", 1, 16, 8)
selection = c2.radio(
    "Frames",
    [QUESTION, UNIFORM],
    horizontal=True,
    format_func={QUESTION: "matching the question", UNIFORM: "spread evenly"}.get,
    help="Matching: half the frames are those CLIP finds most similar to the question, the rest cover the video evenly.",
)

chat_key = str(path) if path is not None else "images:" + ",".join(u.name for u in uploads)
chats = st.session_state.setdefault("qa_chats", {})
history = chats.setdefault(chat_key, [])

frames = None
if path is not None or uploads:
    try:
        with st.spinner("Decoding frames…"):
            if path is not None:
                frames = FRAMES.get(path, embedder, settings)
            else:
                frames = images_as_frames(
                    [(u.name, u.getvalue()) for u in uploads], embedder, settings
                )
        if frames.note:
            st.warning(plain(frames.note))
    except FramescopeError as exc:
        show_error(exc)

if path is not None and frames is not None:
    start = st.session_state.get("qa_seek", {}).get(chat_key, 0.0)
    try:
        limits = settings.video
        st.video(
            str(transcode_for_browser(probe_video(path, limits), settings.home / "playback")),
            start_time=int(start),
        )
    except FramescopeError as exc:
        show_error(exc)

for turn, answer in enumerate(history):
    with st.chat_message("user"):
        st.markdown(plain(answer.question))
    with st.chat_message("assistant"):
        st.markdown(plain(answer.text) or "_(no answer)_")
        with st.expander(f"Frames used ({len(answer.frames)})", expanded=turn == len(history) - 1):
            columns = st.columns(min(len(answer.frames), 8))
            for i, frame in enumerate(answer.frames):
                with columns[i % len(columns)]:
                    st.image(frame.jpeg, width="stretch")
                    if frame.timestamp is not None and st.button(
                        format_timestamp(frame.timestamp),
                        key=f"seek-{turn}-{i}",
                        icon=":material/play_arrow:",
                    ):
                        st.session_state.setdefault("qa_seek", {})[chat_key] = frame.timestamp
                        st.rerun()

if history and st.button("Clear the chat", icon=":material/delete:"):
    chats[chat_key] = []
    st.rerun()

question = st.chat_input("Ask about the video", disabled=frames is None)
if question is not None and frames is not None:
    try:
        with st.spinner("Thinking…"):
            history.append(
                ask(
                    vlm,
                    embedder,
                    frames,
                    question,
                    history,
                    n_frames=n_frames,
                    selection=selection,
                    max_new_tokens=settings.vlm_max_tokens,
                )
            )
        st.rerun()
    except FramescopeError as exc:
        show_error(exc)
