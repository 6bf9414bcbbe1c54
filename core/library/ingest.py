"""What indexing writes to the catalog: images and videos with their frames, embeddings and thumbnails."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import LibraryError
from core.files import write_atomic
from core.library.catalog import frames_rel, thumb_rel
from core.library.db import Database, chunks, marks


@dataclass(frozen=True)
class NewImage:
    """An image ready to be written: its file facts, thumbnail and embedding."""

    path: str
    name: str
    sha256: str
    size: int
    mtime: float
    width: int
    height: int
    thumbnail: bytes | None
    vector: np.ndarray | None  # (dim,) unit vector; None to copy the vector of `same_as`
    same_as: int | None = None  # media id whose embedding is copied (a duplicate file)
    replaces: int | None = None  # media id of an older version of this path


class MissingCopy(LibraryError):
    """An image was to copy the embedding of a file with the same content, and no such embedding
    is left (another run replaced or removed those rows since): it has to be embedded itself."""

    def __init__(self, path: str, media_id: int | None) -> None:
        self.path = path
        super().__init__(f"{path}: the embedding to copy (media {media_id}) is gone")


@dataclass(frozen=True)
class StoredFile:
    """What the catalog knows of a path: enough to decide whether to index it again."""

    id: int
    path: str
    sha256: str | None
    size: int | None
    mtime: float | None
    status: str
    sampling: str | None = None  # videos: the sampling settings their frames were taken with


@dataclass(frozen=True)
class NewFrame:
    """A sampled video frame ready to be written."""

    timestamp: float
    thumbnail: bytes
    vector: np.ndarray  # (dim,) unit vector


class Ingest:
    """Writes of an indexing run, each batch in one transaction, and the look-ups that plan them.

    Thumbnails are written before the rows that name them, so a row never lacks its thumbnail.
    """

    def __init__(self, db: Database, thumbs_dir: Path) -> None:
        self.db = db
        self.thumbs_dir = thumbs_dir

    # -- what is stored already ----------------------------------------------------------------

    def stored_files(
        self, collection_id: int, paths: Iterable[str] | None = None, under: str | None = None
    ) -> dict[str, StoredFile]:
        """Catalog rows of a collection by path: all, those in `paths`, or those under a folder."""
        query = "SELECT id, path, sha256, size, mtime, status, sampling FROM media WHERE collection_id = ?"
        args: list = [collection_id]
        if under is not None:
            prefix = under.rstrip("/") + "/"
            query += " AND substr(path, 1, ?) = ?"
            args += [len(prefix), prefix]
        rows = self.db.conn().execute(query, args).fetchall()
        found = {
            r["path"]: StoredFile(
                r["id"], r["path"], r["sha256"], r["size"], r["mtime"], r["status"], r["sampling"]
            )
            for r in rows
        }
        if paths is not None:
            wanted = set(paths)
            found = {p: f for p, f in found.items() if p in wanted}
        return found

    def embedded_media(self, collection_id: int, model_key: str) -> set[int]:
        """Ids of a collection's media rows that have an embedding for the model."""
        rows = (
            self.db.conn()
            .execute(
                "SELECT m.id FROM media m WHERE m.collection_id = ? AND EXISTS "
                "(SELECT 1 FROM embeddings e WHERE e.media_id = m.id AND e.model_key = ?)",
                (collection_id, model_key),
            )
            .fetchall()
        )
        return {r[0] for r in rows}

    def embedded_copy(self, sha256: str, model_key: str) -> int | None:
        """The id of any media row with this content that already has an embedding for the model."""
        row = (
            self.db.conn()
            .execute(
                "SELECT m.id FROM media m JOIN embeddings e ON e.media_id = m.id "
                "WHERE m.sha256 = ? AND m.status = 'ok' AND e.model_key = ? LIMIT 1",
                (sha256, model_key),
            )
            .fetchone()
        )
        return row[0] if row else None

    def same_content(self, collection_id: int, sha256: str) -> list[StoredFile]:
        rows = (
            self.db.conn()
            .execute(
                "SELECT id, path, sha256, size, mtime, status FROM media WHERE collection_id = ? AND sha256 = ? AND status = 'ok'",
                (collection_id, sha256),
            )
            .fetchall()
        )
        return [
            StoredFile(r["id"], r["path"], r["sha256"], r["size"], r["mtime"], r["status"])
            for r in rows
        ]

    def video_resume_point(
        self, media_id: int, model_key: str
    ) -> tuple[float | None, np.ndarray | None]:
        """Timestamp and vector of the last frame stored for a partially indexed video."""
        row = (
            self.db.conn()
            .execute(
                "SELECT f.timestamp, e.vector FROM frames f JOIN embeddings e ON e.frame_id = f.id "
                "WHERE f.media_id = ? AND e.model_key = ? ORDER BY f.timestamp DESC LIMIT 1",
                (media_id, model_key),
            )
            .fetchone()
        )
        if row is None:
            return None, None
        return row[0], np.frombuffer(row[1], dtype=np.float32).copy()

    # -- images --------------------------------------------------------------------------------

    def add_images(
        self, collection_id: int, model_key: str, images: Sequence[NewImage]
    ) -> list[int]:
        """Write images with their thumbnails and embeddings, all in one transaction.

        Raises MissingCopy (and writes nothing) when an image's `same_as` has no embedding left
        and no other image of the same content has one either.
        """
        for img in images:
            if img.thumbnail is not None:
                target = self.thumbs_dir / thumb_rel(img.sha256)
                if not target.exists():
                    write_atomic(target, img.thumbnail)
        ids = []
        now = time.time()
        with self.db.transaction() as conn:
            for img in images:
                if img.replaces is not None:
                    conn.execute("DELETE FROM media WHERE id = ?", (img.replaces,))
                conn.execute(
                    "DELETE FROM media WHERE collection_id = ? AND path = ?",
                    (collection_id, img.path),
                )
                cur = conn.execute(
                    "INSERT INTO media(collection_id, path, name, kind, sha256, size, mtime, width, height, status, thumb, added) "
                    "VALUES (?, ?, ?, 'image', ?, ?, ?, ?, ?, 'ok', ?, ?)",
                    (
                        collection_id,
                        img.path,
                        img.name,
                        img.sha256,
                        img.size,
                        img.mtime,
                        img.width,
                        img.height,
                        thumb_rel(img.sha256),
                        now,
                    ),
                )
                media_id = cur.lastrowid
                if img.vector is not None:
                    blob = np.ascontiguousarray(img.vector, dtype=np.float32).tobytes()
                    conn.execute(
                        "INSERT INTO embeddings(model_key, media_id, vector) VALUES (?, ?, ?)",
                        (model_key, media_id, blob),
                    )
                else:
                    copied = conn.execute(
                        "INSERT INTO embeddings(model_key, media_id, vector) "
                        "SELECT model_key, ?, vector FROM embeddings WHERE media_id = ? AND model_key = ?",
                        (media_id, img.same_as, model_key),
                    )
                    if copied.rowcount != 1:
                        # The row planned as the source was replaced since (another run of the
                        # file): any other image with the same content has the same vector.
                        copied = conn.execute(
                            "INSERT INTO embeddings(model_key, media_id, vector) "
                            "SELECT e.model_key, ?, e.vector FROM embeddings e "
                            "JOIN media m ON m.id = e.media_id WHERE m.sha256 = ? AND m.id != ? "
                            "AND m.kind = 'image' AND m.status = 'ok' AND e.model_key = ? "
                            "AND e.frame_id IS NULL LIMIT 1",
                            (media_id, img.sha256, media_id, model_key),
                        )
                    if copied.rowcount != 1:
                        raise MissingCopy(img.path, img.same_as)
                ids.append(media_id)
        return ids

    def record_failure(
        self,
        collection_id: int,
        path: str,
        name: str,
        reason: str,
        size: int | None,
        mtime: float | None,
        kind: str = "image",
        url: str | None = None,
    ) -> None:
        """Remember a file that could not be indexed, and why; an older good row of the path is
        replaced. `url`: the web link the file was fetched from."""
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM media WHERE collection_id = ? AND path = ?", (collection_id, path)
            )
            conn.execute(
                "INSERT INTO media(collection_id, path, name, kind, size, mtime, status, error, url, added) "
                "VALUES (?, ?, ?, ?, ?, ?, 'failed', ?, ?, ?)",
                (collection_id, path, name, kind, size, mtime, reason, url, time.time()),
            )

    def link(self, media_id: int, url: str, name: str) -> None:
        """A row (indexed before from the same file) is now also known by this web link and name."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE media SET url = ?, name = ? WHERE id = ?", (url, name, media_id))

    def touch(self, media_id: int, size: int, mtime: float) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE media SET size = ?, mtime = ? WHERE id = ?", (size, mtime, media_id)
            )

    def rename(self, media_id: int, path: str, name: str, mtime: float) -> None:
        """A file moved: the row (and its embeddings) follows it."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE media SET path = ?, name = ?, mtime = ? WHERE id = ?",
                (path, name, mtime, media_id),
            )

    def remove_media(self, media_ids: Sequence[int]) -> int:
        """Drop rows (their frames and embeddings go with them) and thumbnails no longer used."""
        removed, shas = 0, set()
        with self.db.transaction() as conn:
            for chunk in chunks(media_ids):
                ids = marks(len(chunk))
                shas |= {
                    r[0]
                    for r in conn.execute(f"SELECT sha256 FROM media WHERE id IN ({ids})", chunk)
                    if r[0]
                }
                removed += conn.execute(f"DELETE FROM media WHERE id IN ({ids})", chunk).rowcount
            orphaned = [
                sha
                for sha in shas
                if conn.execute("SELECT 1 FROM media WHERE sha256 = ? LIMIT 1", (sha,)).fetchone()
                is None
            ]
        for sha in orphaned:
            (self.thumbs_dir / thumb_rel(sha)).unlink(missing_ok=True)
            shutil.rmtree(self.thumbs_dir / frames_rel(sha), ignore_errors=True)
        return removed

    # -- videos --------------------------------------------------------------------------------

    def begin_video(
        self,
        collection_id: int,
        *,
        path: str,
        name: str,
        sha256: str,
        size: int,
        mtime: float,
        width: int,
        height: int,
        duration: float,
        fps: float,
        sampling: str,
        replaces: int | None = None,
        url: str | None = None,
    ) -> int:
        """A video row in state 'partial': its frames are added batch by batch, then finish_video.
        `url`: the web link the video was fetched from."""
        with self.db.transaction() as conn:
            if url is None:  # a fetched video sampled again keeps its link and its title
                row = conn.execute(
                    "SELECT url, name FROM media WHERE ((collection_id = ? AND path = ?) OR id = ?) "
                    "AND url IS NOT NULL LIMIT 1",
                    (collection_id, path, replaces),
                ).fetchone()
                if row is not None:
                    url, name = row[0], row[1]
            if replaces is not None:
                conn.execute("DELETE FROM media WHERE id = ?", (replaces,))
            conn.execute(
                "DELETE FROM media WHERE collection_id = ? AND path = ?", (collection_id, path)
            )
            cur = conn.execute(
                "INSERT INTO media(collection_id, path, name, kind, sha256, size, mtime, width, height, "
                "duration, fps, status, sampling, url, added) "
                "VALUES (?, ?, ?, 'video', ?, ?, ?, ?, ?, ?, ?, 'partial', ?, ?, ?)",
                (
                    collection_id,
                    path,
                    name,
                    sha256,
                    size,
                    mtime,
                    width,
                    height,
                    duration,
                    fps,
                    sampling,
                    url,
                    time.time(),
                ),
            )
            return cur.lastrowid

    def add_frames(
        self, media_id: int, sha256: str, model_key: str, frames: Sequence[NewFrame]
    ) -> None:
        """Write sampled frames with their thumbnails and embeddings, in one transaction."""
        rels = []
        for frame in frames:
            rel = f"{frames_rel(sha256)}/{round(frame.timestamp * 1000):010d}.jpg"
            target = self.thumbs_dir / rel
            if not target.exists():
                write_atomic(target, frame.thumbnail)
            rels.append(rel)
        with self.db.transaction() as conn:
            for frame, rel in zip(frames, rels, strict=True):
                cur = conn.execute(
                    "INSERT OR IGNORE INTO frames(media_id, timestamp, thumb) VALUES (?, ?, ?)",
                    (media_id, float(frame.timestamp), rel),
                )
                if cur.rowcount == 0:
                    continue  # already stored by an earlier, interrupted run
                blob = np.ascontiguousarray(frame.vector, dtype=np.float32).tobytes()
                conn.execute(
                    "INSERT INTO embeddings(model_key, media_id, frame_id, vector) VALUES (?, ?, ?, ?)",
                    (model_key, media_id, cur.lastrowid, blob),
                )
            if rels:
                conn.execute(
                    "UPDATE media SET thumb = COALESCE(thumb, ?) WHERE id = ?", (rels[0], media_id)
                )

    def finish_video(self, media_id: int, note: str | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE media SET status = 'ok', note = ? WHERE id = ?", (note, media_id))
