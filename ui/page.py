"""What every page starts with: settings, the title and banner, the user's access, the library."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import streamlit as st
from streamlit import runtime
from streamlit.errors import StreamlitAPIException

from core.config import Settings
from core.errors import FramescopeError
from core.library import Library
from ui.components import page_header, show_error
from ui.resources import current_user, get_library, get_settings

T = TypeVar("T")
FRAME = "framescope-frame"  # set by app.py before it runs a page
WANTED = "framescope-wanted-page"  # a page to show once app.py has built the navigation


@dataclass(frozen=True)
class PageStart:
    settings: Settings
    library: Library  # as this session's user sees it
    user: str | None  # None in local mode


def start_page(title: str) -> PageStart:
    """The page's title (and the tiny-profile banner), then the user's access (shared mode: no
    signed-in user, no page) and the library; a library that cannot be opened stops the page
    with its message."""
    _inside_the_frame()
    try:
        settings = get_settings()
    except FramescopeError as exc:
        show_error(exc)
        st.stop()
    page_header(title, settings)
    user = current_user()
    try:
        library = get_library()
    except FramescopeError as exc:
        show_error(exc)
        st.stop()
    return PageStart(settings, library, user)


def load_or_stop(load: Callable[[], T]) -> T:
    """A model the page cannot work without: loaded, or the reason (and the ways out) shown."""
    try:
        return load()
    except FramescopeError as exc:
        show_error(exc)
        st.stop()


def _inside_the_frame() -> None:
    """A page opened by its address before app.py ever ran in this session is run by Streamlit
    on its own, without the navigation: send the session through app.py, which shows this page."""
    if FRAME in st.session_state or not runtime.exists():
        return
    caller = Path(inspect.stack()[2].filename).stem  # the page script: "6_Frame_Search"
    st.session_state[WANTED] = caller.split("_", 1)[1] if caller[:1].isdigit() else caller
    try:
        st.switch_page("app.py")
    except StreamlitAPIException:  # no frame to go to (a page run alone, as in AppTest)
        st.session_state.pop(WANTED, None)
