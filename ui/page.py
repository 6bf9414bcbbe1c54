"""What every page starts with: settings, the title and banner, the user's access, the library."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import streamlit as st

from core.config import Settings
from core.errors import FramescopeError
from core.library import Library
from ui.components import page_header, show_error
from ui.resources import current_user, get_library, get_settings

T = TypeVar("T")


@dataclass(frozen=True)
class PageStart:
    settings: Settings
    library: Library  # as this session's user sees it
    user: str | None  # None in local mode


def start_page(title: str) -> PageStart:
    """The page's title (and the tiny-profile banner), then the user's access (shared mode: no
    signed-in user, no page) and the library; a library that cannot be opened stops the page
    with its message."""
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
