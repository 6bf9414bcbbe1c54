"""Framescope home page: the library at a glance, model status and settings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.config import SETTINGS, shown_value
from core.errors import FramescopeError
from core.format import format_size
from core.models import describe_loaded, planned_models
from ui.components import plain, show_error
from ui.page import start_page
from ui.resources import get_embedder, loaded_models

page = start_page("Framescope")
settings = page.settings
st.markdown(
    "Search your photos and videos by what is in them, classify them with your own labels, caption and "
    "summarize videos, and ask questions about them. Start with **Image search** in the sidebar."
)

library = page.library

st.subheader("Library")
counts = library.catalog.counts()
c1, c2, c3, c4 = st.columns(4)
c1.metric("Collections", counts["collections"])
c2.metric("Images", counts["images"])
c3.metric("Videos", counts["videos"])
c4.metric("Failed files", counts["failed"])
collections = library.catalog.collections()
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

failed = library.catalog.failed_files()
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
try:
    get_embedder()  # search needs it on every page: load it now, or say why it cannot be
except FramescopeError as exc:
    show_error(exc)
loaded = loaded_models()
rows = []
for info in planned_models(settings):
    model = loaded.get(info.role)
    shown = describe_loaded(info.role, model) if model is not None else info
    rows.append(
        {
            "role": shown.role,
            "model": shown.name,
            "device": shown.device,
            "weights": shown.weights,
            "state": "loaded" if model is not None else "not loaded",
        }
    )
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.subheader("Settings")
st.caption(
    f"Mode: {settings.mode}. Settings come from environment variables; change them and restart the app."
)
st.dataframe(
    pd.DataFrame(
        [
            {"variable": s.env, "value": shown_value(s, settings.mode), "meaning": s.meaning}
            for s in SETTINGS
        ]
    ),
    hide_index=True,
    width="stretch",
)
