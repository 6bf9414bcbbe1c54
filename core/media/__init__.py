"""Moved here from core/media.py; the package API is declared in the next commit."""

from core.media.sampling import *  # noqa: F403
