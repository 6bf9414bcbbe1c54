"""Framescope home page: the library at a glance, model status and settings."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from core.config import SETTINGS, shown_value
from core.errors import FramescopeError
from core.format import format_size
from core.models import ENDPOINT, VLM, describe_loaded, planned_models
from ui.components import plain, show_error
from ui.page import start_page
from ui.resources import get_embedder, get_settings, loaded_models

ENDPOINT_CHECK_SECONDS = 2.0  # a quick GET {base}/models; its answer is kept for a minute


@st.cache_data(ttl=60, show_spinner=False)
def endpoint_state(role: str, base_url: str) -> str:
    """Whether the OpenAI-compatible endpoint of a role (at `base_url`: the answer is kept per
    address) answers GET {base}/models within 2 s, in one try: "reachable", or "not reachable"
    with why, in words that name no URL or key."""
    from core.models.endpoint import ChatEndpoint

    settings = get_settings()
    endpoint = settings.vlm_endpoint if role == VLM else settings.llm_endpoint
    try:
        client = ChatEndpoint(
            replace(endpoint, timeout=ENDPOINT_CHECK_SECONDS, retries=0), role, backoff=0.0
        )
        client.call("GET", "/models")
    except FramescopeError as exc:
        message = str(exc)
        for clue, why in (
            ("refused the key", "reachable, but it refused the key"),
            ("HTTP 404", "reachable, but it has no /models (is the URL right?)"),
            ("did not answer", f"no answer within {ENDPOINT_CHECK_SECONDS:g} s"),
            ("connection refused", "connection refused"),
            ("unknown host", "unknown host"),
            ("not JSON", "reachable, but not an OpenAI-compatible API"),
            ("not an http(s) URL", "not an http(s) URL"),
        ):
            if clue in message:
                return why if why.startswith("reachable") else f"not reachable ({why})"
        return "not reachable"
    return "reachable"


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
    state = "loaded" if model is not None else "not loaded"
    name = shown.name
    if shown.weights == ENDPOINT:
        endpoint = settings.vlm_endpoint if info.role == VLM else settings.llm_endpoint
        state += f" · endpoint {endpoint_state(info.role, endpoint.base_url or '')}"
        if settings.mode == "shared":  # endpoint addresses are not shown to users
            name = name.split(" @ ")[0]
    rows.append(
        {
            "role": shown.role,
            "model": name,
            "device": shown.device,
            "weights": shown.weights,
            "state": state,
        }
    )
st.table(pd.DataFrame(rows).set_index("role"))  # four rows, all of them readable at once
st.caption(
    "Models load on first use: the captioner on Video captions, the vision-language model on "
    "Video QA and Video summary, the text model for summaries and paragraph captions. "
    "An endpoint's state is checked at most once a minute."
)

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
