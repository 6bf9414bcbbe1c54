"""What is said and written: transcripts of videos' audio tracks and the text read in images and
frames (OCR), as stored in the library.

A transcript belongs to a file's content (its sha256) and audio track: copies share it and
sampling a video again keeps it. It is written as it is made: segments land with the point the
transcription has reached (`done_until`), so a stopped run resumes there. On-screen text belongs
to a frame of a video, or to an image; a row with empty text records that the frame was read and
holds none, so it is not read again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.library.db import Database
from core.types import Said, Transcript

SOURCES = ("speech", "subtitles")


@dataclass(frozen=True)
class ReadText:
    """The text read in one image or frame: its lines joined by newlines, and their boxes
    ([{text, score, box}], box corners in the image's pixels)."""

    media_id: int
    frame_id: int | None
    text: str
    boxes: tuple[dict, ...] = ()
    timestamp: float | None = None  # seconds into the video, for a frame


@dataclass(frozen=True)
class ScopeSegment:
    """A transcript segment of a video in a search scope."""

    media_id: int
    source: str
    start: float
    end: float
    text: str


class Texts:
    """Transcripts (per content and audio track) and on-screen text (per image or frame)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- transcripts -------------------------------------------------------------------------

    def begin_transcript(
        self, sha256: str, source: str, model: str, *, track: int = 0
    ) -> tuple[int, float]:
        """The id of the transcript being made (created 'partial' when new) and the second its
        stored segments reach: where transcription resumes (0.0 for a new one)."""
        if source not in SOURCES:
            raise ValueError(f"unknown transcript source {source!r}")
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id, done_until FROM transcripts WHERE sha256 = ? AND track = ? "
                "AND source = ? AND model = ?",
                (sha256, track, source, model),
            ).fetchone()
            if row is not None:
                return int(row[0]), float(row[1])
            cur = conn.execute(
                "INSERT INTO transcripts(sha256, track, source, model, status, done_until, updated) "
                "VALUES (?, ?, ?, ?, 'partial', 0, ?)",
                (sha256, track, source, model, time.time()),
            )
            return int(cur.lastrowid), 0.0

    def add_segments(self, transcript_id: int, segments: Sequence[Said], done_until: float) -> None:
        """Append segments and move the resume point to `done_until`, in one transaction (a run
        killed between two calls resumes after what landed, never duplicates it)."""
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO transcript_segments(transcript_id, start, end, text, language) "
                "VALUES (?, ?, ?, ?, ?)",
                [(transcript_id, s.start, s.end, s.text, s.language) for s in segments],
            )
            conn.execute(
                "UPDATE transcripts SET done_until = ?, updated = ? WHERE id = ?",
                (float(done_until), time.time(), transcript_id),
            )

    def finish_transcript(
        self, transcript_id: int, *, language: str | None, note: str | None = None
    ) -> None:
        """Mark a transcript complete, with its main language and why it is empty, if it is."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE transcripts SET status = 'ok', language = ?, note = ?, updated = ? "
                "WHERE id = ?",
                (language, note, time.time(), transcript_id),
            )

    def put_transcript(
        self,
        sha256: str,
        source: str,
        model: str,
        segments: Sequence[Said],
        *,
        language: str | None,
        note: str | None = None,
        track: int = 0,
    ) -> None:
        """Store a whole transcript at once (subtitles), replacing any from the same source."""
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM transcripts WHERE sha256 = ? AND track = ? AND source = ? AND model = ?",
                (sha256, track, source, model),
            )
            end = max((s.end for s in segments), default=0.0)
            cur = conn.execute(
                "INSERT INTO transcripts(sha256, track, source, model, language, status, "
                "done_until, note, updated) VALUES (?, ?, ?, ?, ?, 'ok', ?, ?, ?)",
                (sha256, track, source, model, language, end, note, time.time()),
            )
            conn.executemany(
                "INSERT INTO transcript_segments(transcript_id, start, end, text, language) "
                "VALUES (?, ?, ?, ?, ?)",
                [(cur.lastrowid, s.start, s.end, s.text, s.language) for s in segments],
            )

    def transcripts(self, sha256: str, *, with_segments: bool = True) -> list[Transcript]:
        """Every transcript of a file's content: complete ones first, subtitles before speech."""
        conn = self.db.conn()
        rows = conn.execute(
            "SELECT id, track, source, model, language, status, done_until, note FROM transcripts "
            "WHERE sha256 = ? ORDER BY status = 'partial', source = 'speech', updated DESC",
            (sha256,),
        ).fetchall()
        out = []
        for r in rows:
            segments: tuple[Said, ...] = ()
            if with_segments:
                segments = tuple(
                    Said(s[0], s[1], s[2], s[3])
                    for s in conn.execute(
                        "SELECT start, end, text, language FROM transcript_segments "
                        "WHERE transcript_id = ? ORDER BY start, rowid",
                        (r["id"],),
                    )
                )
            out.append(
                Transcript(
                    source=r["source"],
                    model=r["model"],
                    language=r["language"],
                    status=r["status"],
                    done_until=float(r["done_until"]),
                    segments=segments,
                    note=r["note"],
                    track=int(r["track"]),
                )
            )
        return out

    def transcript(
        self, sha256: str, *, prefer: str = "subtitles", model: str | None = None
    ) -> Transcript | None:
        """The transcript to use for a file: a complete one from the preferred source (subtitles or
        speech) if there is one, else a complete one from the other, else a partial one; speech by
        `model` only, when given. None when the file has none."""
        found = [
            t
            for t in self.transcripts(sha256)
            if t.source == "subtitles" or model is None or t.model == model
        ]
        found.sort(key=lambda t: (not t.complete, t.source != prefer))
        return found[0] if found else None

    def segments_in_scope(
        self, media_ids: Sequence[int], *, prefer: str = "subtitles"
    ) -> list[ScopeSegment]:
        """The transcript segments of the given videos, one transcript per video (as `transcript`
        chooses it: preferred source, complete first), for search."""
        rows = self.db.rows_in(
            "SELECT m.id, t.id, t.source, t.status FROM media m JOIN transcripts t "
            "ON t.sha256 = m.sha256 WHERE m.kind = 'video' AND m.id IN ({ids})",
            media_ids,
        )
        chosen: dict[int, tuple] = {}
        for media_id, tid, source, status in rows:
            rank = (status != "ok", source != prefer, -tid)
            if media_id not in chosen or rank < chosen[media_id][0]:
                chosen[media_id] = (rank, tid, source)
        by_transcript: dict[int, list[tuple[int, str]]] = {}
        for media_id, (_, tid, source) in chosen.items():
            by_transcript.setdefault(tid, []).append((media_id, source))
        out: list[ScopeSegment] = []
        for r in self.db.rows_in(
            "SELECT transcript_id, start, end, text FROM transcript_segments "
            "WHERE transcript_id IN ({ids}) ORDER BY transcript_id, start",
            sorted(by_transcript),
        ):
            for media_id, source in by_transcript[r[0]]:
                out.append(ScopeSegment(media_id, source, float(r[1]), float(r[2]), r[3]))
        return out

    # -- on-screen text ------------------------------------------------------------------------

    def add_read_text(self, model: str, items: Iterable[ReadText]) -> None:
        """Store the text read in images and frames (replacing what `model` read there before)."""
        items = list(items)
        with self.db.transaction() as conn:
            for item in items:
                if item.frame_id is None:
                    conn.execute(
                        "DELETE FROM frame_text WHERE model = ? AND media_id = ? AND frame_id IS NULL",
                        (model, item.media_id),
                    )
                else:
                    conn.execute(
                        "DELETE FROM frame_text WHERE model = ? AND frame_id = ?",
                        (model, item.frame_id),
                    )
                conn.execute(
                    "INSERT INTO frame_text(media_id, frame_id, model, text, boxes) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (item.media_id, item.frame_id, model, item.text, json.dumps(list(item.boxes))),
                )

    def read_text_of(self, media_id: int, model: str | None = None) -> list[ReadText]:
        """The text read in an image, or in the frames of a video (by time), boxes included."""
        query = (
            "SELECT t.media_id, t.frame_id, t.text, t.boxes, f.timestamp FROM frame_text t "
            "LEFT JOIN frames f ON f.id = t.frame_id WHERE t.media_id = ?"
        )
        params: list = [media_id]
        if model is not None:
            query += " AND t.model = ?"
            params.append(model)
        rows = self.db.conn().execute(query + " ORDER BY f.timestamp", params).fetchall()
        return [ReadText(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4]) for r in rows]

    def frames_read(self, media_id: int, model: str) -> set[int | None]:
        """The frames of a video (or None: the image itself) whose text `model` has read."""
        rows = (
            self.db.conn()
            .execute(
                "SELECT frame_id FROM frame_text WHERE media_id = ? AND model = ?",
                (media_id, model),
            )
            .fetchall()
        )
        return {r[0] for r in rows}

    def text_in_scope(self, media_ids: Sequence[int]) -> list[ReadText]:
        """The non-empty text read in the given images and videos' frames, for search (no boxes)."""
        rows = self.db.rows_in(
            "SELECT t.media_id, t.frame_id, t.text, f.timestamp FROM frame_text t "
            "LEFT JOIN frames f ON f.id = t.frame_id WHERE t.text != '' AND t.media_id IN ({ids})",
            media_ids,
        )
        return [ReadText(r[0], r[1], r[2], (), r[3]) for r in rows]
