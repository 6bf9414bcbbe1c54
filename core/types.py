"""Small frozen dataclasses passed between the library, the CLI and the app."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]  # (n, dim), unit-norm rows
Vector = NDArray[np.float32]  # (dim,), unit norm


@dataclass(frozen=True)
class Hit:
    """One search result: a library item (an image, or a video frame) and its score."""

    embedding_id: int
    media_id: int
    path: str
    name: str
    kind: str  # "image" or "video"
    collection: str
    score: float
    size_bytes: int | None
    width: int | None
    height: int | None
    thumbnail: str | None
    timestamp: float | None = None  # seconds into the video, for video frames
    frame_id: int | None = None
    sha256: str | None = None  # the file's content hash: copies of one file share it
    copies: tuple[str, ...] = ()  # other paths of the same file, collapsed into this hit

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path this hit stands for: its own, then its copies'."""
        return (self.path, *self.copies)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    """Ranked hits; `shown` are those above the relevance cutoff, `hits` are all of them."""

    hits: tuple[Hit, ...]
    cutoff: float | None  # score below which hits are hidden; None when no cutoff applies
    query: str  # what was searched for: the text, the example images' names, or both
    text: str = ""  # the text searched for, as typed (without example images)
    examples: tuple[str, ...] = ()  # names of the example images (uploads, "more like this")

    @property
    def shown(self) -> tuple[Hit, ...]:
        if self.cutoff is None:
            return self.hits
        return tuple(h for h in self.hits if h.score >= self.cutoff)

    @property
    def hidden_count(self) -> int:
        return len(self.hits) - len(self.shown)


@dataclass(frozen=True)
class Sampling:
    """How frames are taken from a video."""

    every: float = 1.0  # seconds between frames (time mode)
    max_frames: int = 7200  # at most this many; longer videos get an evenly widened interval
    scenes: bool = False  # one frame per shot instead of by time
    dedup: float = (
        0.95  # drop a frame whose CLIP cosine to the last kept frame is at least this (1: keep all)
    )

    def key(self) -> str:
        """Stored with each video: frames taken with other settings are taken again."""
        return f"every={self.every:g};max={self.max_frames};scenes={int(self.scenes)};dedup={self.dedup:g}"


@dataclass(frozen=True)
class FailedFile:
    path: str
    reason: str


@dataclass
class IndexReport:
    """What one indexing run did, file by file counts."""

    collection: str
    added: int = 0  # embedded for the first time
    updated: int = 0  # content changed, embedded again
    unchanged: int = 0  # same size, mtime (or hash): skipped
    renamed: int = 0  # moved or renamed: embedding kept
    reused: int = 0  # a copy of a file already embedded: vector copied
    removed: int = 0  # gone from disk: dropped from the library
    ignored: int = 0  # not an image or video (other file types in the folder)
    skipped_videos: int = 0  # videos an images-only run (Image search) left for Frame search
    frames: int = 0  # video frames stored by this run
    duplicates: int = 0  # video frames dropped as near-duplicates of the previous kept frame
    failed: list[FailedFile] = field(default_factory=list)
    warnings: list[FailedFile] = field(
        default_factory=list
    )  # indexed, but with a caveat (truncated video)
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    images: int
    videos: int
    failed: int
    bytes: int


@dataclass(frozen=True)
class MediaRecord:
    """A library row as stored: status 'ok', 'failed', or 'partial' (a video being indexed)."""

    id: int
    collection: str
    path: str
    name: str
    kind: str
    status: str
    error: str | None
    sha256: str | None
    size_bytes: int | None
    width: int | None
    height: int | None
    thumbnail: str | None
    duration: float | None = None  # videos, seconds
    fps: float | None = None
    note: str | None = None  # e.g. why a video's frames stop early
    url: str | None = None  # the web link a video was fetched from (None: a file on this machine)


@dataclass(frozen=True)
class Said:
    """A stretch of a transcript: what was said (or subtitled) from `start` to `end` seconds."""

    start: float
    end: float
    text: str
    language: str | None = None  # the language detected for this stretch, when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Transcript:
    """What is said in a video's audio track, from one source.

    `source` is "speech" (transcribed by the ASR model `model`) or "subtitles" (a subtitle stream
    of the file, or the subtitles fetched with its link: `model` says which). `status` is "partial"
    while transcription has reached only `done_until` seconds (a stopped run resumes there), else
    "ok". `note` says why there is nothing: no audio track, silence only.
    """

    source: str
    model: str
    language: str | None
    status: str
    done_until: float
    segments: tuple[Said, ...] = ()
    note: str | None = None
    track: int = 0

    @property
    def complete(self) -> bool:
        return self.status == "ok"

    @property
    def text(self) -> str:
        return "\n".join(s.text for s in self.segments)

    def between(self, start: float, end: float) -> tuple[Said, ...]:
        """The segments that overlap [start, end] seconds."""
        return tuple(s for s in self.segments if s.start < end and s.end > start)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model": self.model,
            "language": self.language,
            "status": self.status,
            "note": self.note,
            "track": self.track,
            "segments": [s.to_dict() for s in self.segments],
        }
