"""What indexing reads: folders scanned, the files it takes, and the plan for each of them."""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from core.media import (
    IMAGE_EXTENSIONS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
)

# Names that operating systems and tools leave in photo folders.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
SYSTEM_FOLDERS = frozenset(
    {"__macosx", "@eadir", "$recycle.bin", "system volume information", "lost+found"}
)
INDEXABLE = IMAGE_EXTENSIONS | UNSUPPORTED_IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Candidate:
    path: Path
    name: str  # display name: the file name, an upload's original name, or a video's title
    url: str | None = None  # the web link a downloaded video was fetched from

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class _Planned:
    candidate: Candidate
    size: int
    mtime: float
    sha256: str
    replaces: int | None
    resume: int | None = None  # a partly indexed video: its media id


def scan_folder(
    folder: Path, on_error: Callable[[Path, str], None] | None = None
) -> Iterator[Path]:
    """Files under a folder, recursively, in a stable order; hidden and system files skipped.

    A folder that cannot be listed (permission denied, removed while scanned) is passed over;
    `on_error(folder, reason)` hears of it, the reason reading "cannot read the folder: ...".
    """

    def unreadable(exc: OSError) -> None:
        if on_error is not None:
            on_error(Path(exc.filename or folder), folder_error(exc))

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=False):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d.lower() not in SYSTEM_FOLDERS
        )
        for name in sorted(files):
            if name.startswith(".") or name.lower() in SYSTEM_FILES:
                continue
            yield Path(root) / name


def folder_error(exc: OSError) -> str:
    """The reason a folder could not be listed, as the failed-files list shows it."""
    text = exc.strerror or str(exc)
    return f"cannot read the folder: {text[:1].lower()}{text[1:]}"


def _prefetch(fn: Callable, items: Iterable, workers: int, window: int) -> Iterator:
    """fn over items in worker threads, results in order, at most `window` in flight."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="framescope-load") as pool:
        it = iter(items)
        pending = deque(pool.submit(fn, x) for x in islice(it, window))
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield result


def upload_name(name: str) -> str:
    """A safe file name for an upload: no folders, no control or odd characters."""
    base = Path(name.replace("\\", "/")).name
    base = re.sub(r"[^\w.\- ]+", "_", base).strip(" .") or "upload"
    return base[:120]
