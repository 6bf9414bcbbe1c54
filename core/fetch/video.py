"""FetchedVideo: a downloaded video and what its page said about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FetchedVideo:
    """A downloaded video and what its page said about it."""

    url: str  # the link as checked and normalised by check_url
    path: Path
    title: str
    uploader: str | None
    duration: float | None  # seconds
    chapters: tuple[dict, ...]  # {"start": s, "end": s, "title": str}
    subtitles: str | None  # plain text of the manual or automatic subtitles (English preferred)
    cues: tuple[tuple[float, float, str], ...]  # the same subtitles as (start, end, text)
    extractor: str  # yt-dlp's extractor, e.g. "Youtube" or "Generic"
