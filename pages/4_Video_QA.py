"""Video question answering: chat about a video (or a few images); answers show their frames."""

from __future__ import annotations

import streamlit as st

from core.errors import FramescopeError
from core.format import format_timestamp
from core.media import load_image
from core.qa import FRAMES, QUESTION, UNIFORM, ask, images_as_frames
from ui.components import plain, show_error
from ui.page import start_page
from ui.resources import get_embedder, get_vlm
from ui.widgets import play, show_video_error, video_source

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
VIDEO, IMAGES = "A video", "Images"

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

about = st.radio("Ask about", [VIDEO, IMAGES], horizontal=True, key="qa-about")
chosen = None
uploads = []
if about == VIDEO:
    chosen = video_source("qa")
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


def _readable_images(files) -> list[tuple[str, bytes]]:
    """The uploaded images that can be read; each one that cannot is named, with the reason."""
    good = []
    for file in files:
        data = file.getvalue()
        try:
            load_image(
                data,
                name=file.name,
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
            )
        except FramescopeError as exc:
            st.warning(f"Skipped {plain(str(exc))}", icon=":material/warning:")
            continue
        good.append((file.name, data))
    return good


chat_key = chosen.key if chosen is not None else "images:" + ",".join(u.file_id for u in uploads)
chats = st.session_state.setdefault("qa_chats", {})
history = chats.setdefault(chat_key, [])

frames = None
if chosen is not None:
    try:
        with st.spinner("Decoding frames…"):
            frames = FRAMES.get(chosen.path, embedder, settings)
        if frames.note:
            st.warning(plain(chosen.mention(frames.note)))
    except (FramescopeError, OSError) as exc:
        show_video_error(FramescopeError(str(exc)), chosen)
elif uploads:
    readable = _readable_images(uploads)
    if readable:
        try:
            with st.spinner("Reading the images…"):
                frames = images_as_frames(readable, embedder, settings)
        except FramescopeError as exc:
            show_error(exc)
    else:
        st.info("None of the images can be read: add another one.")

for turn, answer in enumerate(history):
    with st.chat_message("user"):
        st.markdown(plain(answer.question))
    with st.chat_message("assistant"):
        st.markdown(plain(answer.text) or "_(no answer)_")
        with st.expander(f"Frames used ({len(answer.frames)})", expanded=turn == len(history) - 1):
            per_row = 4  # wide enough for each frame's time to be read on its button
            for i, frame in enumerate(answer.frames):
                if i % per_row == 0:
                    columns = st.columns(per_row)
                with columns[i % per_row]:
                    st.image(frame.jpeg, width="stretch")
                    if (
                        chosen is not None
                        and frame.timestamp is not None
                        and st.button(
                            format_timestamp(frame.timestamp),
                            key=f"seek-{turn}-{i}",
                            icon=":material/play_arrow:",
                            help="Play the video from here",
                        )
                    ):
                        play(chosen.path, frame.timestamp, title=chosen.name)

if history and st.button("Clear the chat", icon=":material/delete:"):
    chats[chat_key] = []
    st.rerun()

question = st.chat_input(
    "Ask about the video" if about == VIDEO else "Ask about the images", disabled=frames is None
)
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
