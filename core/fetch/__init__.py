"""Moved here from core/fetch.py; the package API is declared in the next commit."""

from core.fetch.ytdlp import *  # noqa: F403
