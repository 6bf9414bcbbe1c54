"""One object for long work (indexing, captions, summaries, downloads): progress and stop requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import AccessDenied


@dataclass(frozen=True)
class Step:
    """A progress report: `done` of `total` (None when unknown), in a stage, with a message."""

    done: float
    total: float | None
    message: str
    stage: str = ""

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None


Listener = Callable[[Step], None]


class Job:
    """The two-way line between a long task and whoever started it.

    The task calls `report(done, total, message)` as it goes and checks `stopped` between items;
    work written so far is kept when it stops, and running it again resumes. The caller passes
    `on_progress` to show the steps (a progress bar, a terminal line) and calls `stop()` (or passes
    `should_stop`, asked at each check) to end it early. `stage(name)` gives the same job with
    its reports tagged, for tasks made of stages (download, describe, reconcile).
    """

    def __init__(
        self,
        on_progress: Listener | None = None,
        should_stop: Callable[[], bool] | None = None,
        *,
        _stage: str = "",
        _parent: Job | None = None,
    ) -> None:
        self._on_progress = on_progress
        self._should_stop = should_stop
        self._stop = threading.Event()
        self._stage = _stage
        self._parent = _parent

    def report(self, done: float, total: float | None, message: str) -> None:
        if self._parent is not None:
            self._parent._emit(Step(done, total, message, self._stage))
        else:
            self._emit(Step(done, total, message, self._stage))

    def _emit(self, step: Step) -> None:
        if self._on_progress is not None:
            self._on_progress(step)

    def stop(self) -> None:
        """Ask the task to stop at its next check."""
        (self._parent or self)._stop.set()

    @property
    def stopped(self) -> bool:
        root = self._parent or self
        if not root._stop.is_set() and root._should_stop is not None and root._should_stop():
            root._stop.set()
        return root._stop.is_set()

    def stage(self, name: str) -> Job:
        """This job, with its reports tagged `name`."""
        return Job(_stage=name, _parent=self._parent or self)


def job_or_new(job: Job | None) -> Job:
    """The caller's job, or a silent one that is never stopped."""
    return job if job is not None else Job()


class JobSlots:
    """At most `limit` long jobs at a time for each user of a shared deployment (one process
    serves every session, so one registry counts them all)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def running(self, user: str) -> int:
        with self._lock:
            return self._running.get(user, 0)

    @contextmanager
    def hold(self, user: str | None, limit: int) -> Iterator[None]:
        """A slot for one job of `user` while the block runs; AccessDenied when all are taken.
        `user` None (local mode) is never limited."""
        if user is None:
            yield
            return
        with self._lock:
            if self._running.get(user, 0) >= limit:
                raise AccessDenied(
                    f"you already have {limit} long job(s) running (FRAMESCOPE_USER_JOBS); "
                    "wait for it to finish or stop it, then try again"
                )
            self._running[user] = self._running.get(user, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[user] -= 1


SLOTS = JobSlots()
