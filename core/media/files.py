"""File facts shared by images and videos: content hashing and sizes described for messages."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from core.errors import MediaError

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISDIR, "a folder"),
)


def not_regular_reason(mode: int) -> str | None:
    """Why a file with this `st_mode` is not read as media (None for a regular file).

    Opening a named pipe blocks until something writes to it, and a device may never end: such
    files are refused from their `os.stat`, before anything opens them.
    """
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a special file")
    return f"not a regular file: {kind}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a regular file's content; MediaError for anything else (pipe, device...).

    The file is opened without blocking, so a named pipe put in its place is refused rather than
    waited on for ever.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        reason = not_regular_reason(os.fstat(fd).st_mode)
        if reason is not None:
            raise MediaError(path, reason)
        digest = hashlib.sha256()
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
