"""Framescope home page: the library at a glance, model status and settings."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core.config import ENVIRONMENT
from core.errors import FramescopeError
from core.models.clip import resolve_device
from ui.components import format_size, page_header, plain, show_error
from ui.resources import get_embedder, get_library, get_settings

st.set_page_config(page_title="Framescope", page_icon=":material/frame_inspect:", layout="wide")
settings = get_settings()
page_header("Framescope", settings)
st.markdown(
    "Search your photos and videos by what is in them, classify them with your own labels, caption and "
    "summarize videos, and ask questions about them. Start with **Image search** in the sidebar."
)

try:
    library = get_library()
except FramescopeError as exc:
    show_error(exc)
    st.stop()

st.subheader("Library")
counts = library.counts()
c1, c2, c3, c4 = st.columns(4)
c1.metric("Collections", counts["collections"])
c2.metric("Images", counts["images"])
c3.metric("Videos", counts["videos"])
c4.metric("Failed files", counts["failed"])
collections = library.collections()
if collections:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "collection": c.name,
                    "images": c.images,
                    "videos": c.videos,
                    "failed": c.failed,
                    "size": format_size(c.bytes),
                }
                for c in collections
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.info("The library is empty: add a folder or upload images on the **Image search** page.")
st.caption(f"Data directory: {plain(str(settings.home))}")

failed = library.failed_files()
if failed:
    with st.expander(f"Failed files ({len(failed)})", expanded=len(failed) <= 10):
        st.dataframe(
            pd.DataFrame(
                [
                    {"file": f.name, "path": f.path, "collection": f.collection, "reason": f.error}
                    for f in failed
                ]
            ),
            hide_index=True,
            width="stretch",
        )

st.subheader("Models")
clip_name = (
    "framescope-tiny-clip"
    if settings.profile == "tiny"
    else f"{settings.clip_model} / {settings.clip_pretrained}"
)
status = {
    "role": "image-text embeddings (CLIP)",
    "model": clip_name,
    "profile": settings.profile,
    "device": resolve_device(settings.device),
}
try:
    embedder = get_embedder()
    status["weights"] = "real" if embedder.real_weights else "random (tiny profile)"
    status["state"] = "loaded"
except FramescopeError as exc:
    status["weights"] = "unavailable"
    status["state"] = "not loaded"
    show_error(exc)
st.dataframe(pd.DataFrame([status]), hide_index=True, width="stretch")


def setting_shown(name: str, default: str) -> str:
    """A setting's value for the table: keys are never shown, endpoints not in shared mode."""
    value = os.environ.get(name, "")
    if not value:
        return f"(default: {default})"
    if name.endswith("_API_KEY") or (settings.mode == "shared" and name.endswith("_BASE_URL")):
        return "(set, hidden)"
    return value


st.subheader("Settings")
st.caption(
    f"Mode: {settings.mode}. Settings come from environment variables; change them and restart the app."
)
st.dataframe(
    pd.DataFrame(
        [
            {
                "variable": name,
                "value": setting_shown(name, default),
                "meaning": meaning,
            }
            for name, (default, meaning) in ENVIRONMENT.items()
        ]
    ),
    hide_index=True,
    width="stretch",
)
