"""One indexing run per collection at a time, across threads and processes: a lock file per collection.

Two runs over the same collection would each plan from what the other is rewriting (a copy's
source row replaced under it, files counted twice). The lock is an advisory `flock` on
`FRAMESCOPE_HOME/locks/<hash of the collection name>.lock`, held for the run; the operating
system drops it when its holder ends, so a run killed with kill -9 leaves no stale lock behind.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from core.errors import LibraryError

try:
    import fcntl
except ImportError:  # Windows: msvcrt locks a byte of the file instead
    fcntl = None  # type: ignore[assignment]
    import msvcrt


def lock_name(collection: str) -> str:
    """The lock file's name for a collection (any characters in the name are fine)."""
    return hashlib.sha256(collection.strip().encode("utf-8")).hexdigest()[:24] + ".lock"


class CollectionLock:
    """The lock of one collection: `acquire` waits (and says so) while another run holds it."""

    def __init__(self, locks_dir: Path, collection: str) -> None:
        self.collection = collection.strip()
        self.path = Path(locks_dir) / lock_name(collection)
        self._fd: int | None = None

    def _try(self, fd: int) -> bool:
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:  # BlockingIOError, or EACCES/EDEADLK on Windows: someone else has it
            return False
        return True

    def acquire(
        self,
        *,
        on_wait: Callable[[str], None] | None = None,
        stopped: Callable[[], bool] = lambda: False,
        poll: float = 0.2,
    ) -> bool:
        """Take the lock, waiting while another run holds it; False if `stopped()` came first.

        `on_wait(message)` hears once that this run waits, and why.
        """
        if self._fd is not None:
            raise RuntimeError("this collection lock is held already")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LibraryError(
                f"cannot create the indexing lock {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            waiting = False
            while not self._try(fd):
                if not waiting and on_wait is not None:
                    on_wait(
                        f"waiting for another indexing run of collection '{self.collection}' "
                        "to finish…"
                    )
                waiting = True
                if stopped():
                    os.close(fd)
                    return False
                time.sleep(poll)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)
