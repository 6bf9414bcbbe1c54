"""Framescope's exception tree: every error a user can cause or meet is one of these.

FramescopeError              base: catch this to show a message instead of a traceback
├── ConfigError              a FRAMESCOPE_* setting or option is invalid
├── AccessDenied             a path or host is outside what this deployment allows
├── MediaError               a file cannot be used (missing, empty, corrupt, too big, unsupported)
├── ModelUnavailable         model weights cannot be loaded; the message names the ways out
├── QueryError               a search or question cannot be run (empty query, nothing indexed)
└── LibraryError             the library on disk is unusable or inconsistent
"""

from __future__ import annotations

from pathlib import Path


class FramescopeError(Exception):
    """Base of every error Framescope raises on purpose; its message is meant for the user."""


class ConfigError(FramescopeError):
    """A setting (environment variable, option or argument) has an invalid value."""


class AccessDenied(FramescopeError):
    """A path or host is outside what this deployment allows."""


class MediaError(FramescopeError):
    """A media file cannot be used; `path` names it and `reason` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelUnavailable(FramescopeError):
    """Model weights cannot be loaded (no network, no cache, bad local path)."""


class QueryError(FramescopeError):
    """A query cannot be run as given."""


class LibraryError(FramescopeError):
    """The library on disk cannot be used as it is."""
