"""Terminal output: text made inert before it is printed, and a job's progress line on stderr."""

from __future__ import annotations

import re
import sys
import time

from core.jobs import Job, Step

# C0 controls (newline, carriage return, escape, ...), DEL, C1 controls, and the Unicode
# characters that reorder text (bidi embeddings, overrides, isolates and marks) or break lines.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` (a path, name, title, caption, answer or model output) made inert for a terminal:
    control characters (C0, DEL, C1) and bidi controls become visible escapes such as `\\x1b`,
    `\\r`, `\\n` and `\\u202e`, so a file name cannot move the cursor, recolour or rewrite lines."""
    return _UNPRINTABLE.sub(_escape, str(text))


_ITEM = re.compile(r"^(\d+/\d+) ")  # "2/3 <title>: ..." : one video of a link's list
_ENDED = re.compile(r": (done|already in the library)$|: failed: ")  # ... and its last line


class _ProgressLine:
    """A job's progress on stderr: one rewritten line on a terminal, a line every few seconds
    otherwise. Its `job` goes to the work. With `items` (the videos of web links, whose messages
    start "2/3 <title>: "), each video's first and last lines are always shown."""

    def __init__(self, *, items: bool = False) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.items = items
        self.item: str | None = None
        self.job = Job(on_progress=self.show)

    def show(self, step: Step) -> None:
        now = time.monotonic()
        final = step.message == "done"
        item = _ITEM.match(step.message) if self.items else None
        ended = item is not None and _ENDED.search(step.message) is not None
        turn = ended or (item is not None and item.group(1) != self.item)
        if item is not None:
            self.item = item.group(1)
        if not final and not turn and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        count = f"[{int(step.done)}/{int(step.total)}] " if step.total and not self.items else ""
        stage = f"{step.stage}: " if step.stage else ""
        line = printable(f"{count}{stage}{step.message}")
        if self.tty:
            sys.stderr.write("\r" + line.ljust(70) + ("\n" if final or ended else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
