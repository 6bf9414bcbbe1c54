"""A job's progress on stderr, for the long-running commands."""

from __future__ import annotations

import sys
import time

from core.jobs import Job, Step


class _ProgressLine:
    """A job's progress on stderr: one rewritten line on a terminal, a line every few seconds
    otherwise. Its `job` goes to the work."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.job = Job(on_progress=self.show)

    def show(self, step: Step) -> None:
        now = time.monotonic()
        final = step.message == "done"
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        count = f"[{int(step.done)}/{int(step.total)}] " if step.total else ""
        stage = f"{step.stage}: " if step.stage else ""
        line = f"{count}{stage}{step.message}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(70) + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
