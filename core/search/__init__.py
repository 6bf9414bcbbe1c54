"""Moved here from core/search.py; the package API is declared in the next commit."""

from core.search.query import *  # noqa: F403
