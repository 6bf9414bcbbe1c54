"""Every st.cache_resource of the app: settings, the library and models, shared by all sessions."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from core.config import Settings
from core.errors import AccessDenied
from core.indexing import Indexer
from core.library import Library
from core.library.visibility import check_user
from core.models import CAPTIONER, EMBEDDINGS, LLM, VLM
from core.models.captioner import Captioner, load_captioner
from core.models.clip import ClipEmbedder, load_clip

_LOADED: dict[str, object] = {}  # role -> model, for the models this process has loaded


def loaded_models() -> dict[str, object]:
    """The models loaded so far in this process, by role (what the Home page lists as loaded)."""
    return dict(_LOADED)


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    return Settings.from_env()


@st.cache_resource(show_spinner=False)
def _whole_library() -> Library:
    settings = get_settings()
    return Library(settings.home, exact_search_limit=settings.exact_search_limit)


def request_headers() -> Mapping[str, str]:
    """The headers of this session's request (the proxy's, in shared mode)."""
    return st.context.headers


def current_user() -> str | None:
    """Who uses this session: None in local mode; in shared mode the user the authenticating
    proxy names in FRAMESCOPE_USER_HEADER. No such header, no access: the page stops here."""
    settings = get_settings()
    if settings.mode != "shared":
        return None
    try:
        return check_user(request_headers().get(settings.user_header) or "")
    except AccessDenied:
        st.error(
            f"No access: this shared Framescope serves signed-in users only, and this request "
            f"came without a user ({settings.user_header} header). Sign in through the proxy."
        )
        st.stop()


def get_library() -> Library:
    """The library as this session's user sees it (all of it in local mode): the operator's
    collections and their own, never another user's."""
    return _whole_library().for_user(current_user())


@st.cache_resource(show_spinner="Loading the CLIP model (first use downloads its weights)…")
def get_embedder() -> ClipEmbedder:
    """Raises ModelUnavailable; a failure is not cached, so the next run tries again."""
    _LOADED[EMBEDDINGS] = model = load_clip(get_settings())
    return model


@st.cache_resource(show_spinner="Loading the captioning model (first use downloads its weights)…")
def get_captioner() -> Captioner:
    _LOADED[CAPTIONER] = model = load_captioner(get_settings())
    return model


@st.cache_resource(
    show_spinner="Loading the vision-language model (first use downloads its weights)…"
)
def get_vlm():
    """The local VLM, or the OpenAI-compatible endpoint when FRAMESCOPE_VLM_BASE_URL is set."""
    from core.models.vlm import load_vlm

    _LOADED[VLM] = model = load_vlm(get_settings())
    return model


@st.cache_resource(show_spinner="Loading the text model (first use downloads its weights)…")
def get_llm():
    """The local text LLM, or the OpenAI-compatible endpoint when FRAMESCOPE_LLM_BASE_URL is set."""
    from core.models.llm import load_llm

    _LOADED[LLM] = model = load_llm(get_settings())
    return model


def get_indexer() -> Indexer:
    return Indexer(get_library(), get_embedder(), get_settings())
