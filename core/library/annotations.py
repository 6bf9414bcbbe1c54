"""What models say about the library: frame captions, chunk descriptions and summaries."""

from __future__ import annotations

import time
from collections.abc import Sequence

from core.library.db import Database


class Annotations:
    """Captions per frame, model and prompt; chunk descriptions (cached for resume); summaries."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def captions_for(self, media_id: int, model_key: str, prompt: str) -> dict[int, str]:
        """Stored captions of a video's frames by one captioning model and prompt: {frame id: text}."""
        rows = (
            self.db.conn()
            .execute(
                "SELECT c.frame_id, c.text FROM captions c JOIN frames f ON f.id = c.frame_id "
                "WHERE f.media_id = ? AND c.model_key = ? AND c.prompt = ?",
                (media_id, model_key, prompt),
            )
            .fetchall()
        )
        return {r[0]: r[1] for r in rows}

    def add_captions(self, model_key: str, prompt: str, captions: dict[int, str]) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO captions(frame_id, model_key, prompt, text) VALUES (?, ?, ?, ?)",
                [(frame_id, model_key, prompt, text) for frame_id, text in captions.items()],
            )

    def captions_in_scope(self, media_ids: Sequence[int]) -> list[tuple[int, int, str]]:
        """(frame id, media id, caption text) of every captioned frame of the given videos."""
        rows = self.db.rows_in(
            "SELECT c.frame_id, f.media_id, c.text FROM captions c JOIN frames f ON f.id = c.frame_id "
            "WHERE f.media_id IN ({ids})",
            media_ids,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def chunk_descriptions(
        self, video: str, chunking: str, model_key: str, mode: str
    ) -> dict[int, str]:
        """Cached descriptions of a video's chunks: {chunk index: text}."""
        rows = (
            self.db.conn()
            .execute(
                "SELECT chunk, text FROM chunk_descriptions WHERE video = ? AND chunking = ? AND model_key = ? AND mode = ?",
                (video, chunking, model_key, mode),
            )
            .fetchall()
        )
        return {r[0]: r[1] for r in rows}

    def add_chunk_description(
        self,
        video: str,
        chunking: str,
        model_key: str,
        mode: str,
        chunk: int,
        start: float,
        end: float,
        text: str,
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO chunk_descriptions(video, chunking, chunk, model_key, mode, start, end, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (video, chunking, chunk, model_key, mode, start, end, text),
            )

    def add_summary(self, source: str, title: str | None, data: str) -> int:
        with self.db.transaction() as conn:
            return conn.execute(
                "INSERT INTO summaries(source, title, created, data) VALUES (?, ?, ?, ?)",
                (source, title, time.time(), data),
            ).lastrowid

    def summaries(self, limit: int = 50) -> list[tuple[int, str, str | None, float, str]]:
        """Stored summaries, newest first: (id, source, title, created, JSON)."""
        return [
            tuple(r)
            for r in self.db.conn()
            .execute(
                "SELECT id, source, title, created, data FROM summaries ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        ]
