"""Moved here from core/store.py; the package API is declared in the next commit."""

from core.library.catalog import *  # noqa: F403
