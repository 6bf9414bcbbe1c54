"""How sizes, durations and moments in a video are written for people, everywhere in Framescope."""

from __future__ import annotations


def format_size(n: float | None) -> str:
    """1000 -> '1000 bytes', 2_500_000 -> '2.4 MB'; None -> '-'."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{int(n)} bytes"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """A length of time: '15.2 s', '3 min 5 s', '2 h 10 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def format_timestamp(seconds: float, *, whole_seconds: bool = False) -> str:
    """A moment in a video: 12.3 -> '0:12.3', 3725 -> '1:02:05.0'; whole seconds (rounded down)
    '0:12', '1:02:05' where tenths would only clutter (a model's prompt)."""
    seconds = max(seconds, 0.0)
    if whole_seconds:
        hours, rest = divmod(int(seconds), 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"
