"""The library: a SQLite catalog (the source of truth) with embeddings, and FAISS indexes as caches.

Layout of `FRAMESCOPE_HOME`:
    library.db            SQLite (WAL): collections, media, embeddings
    thumbs/ab/abcdef.jpg  thumbnails, named by the file's sha256 (shared by copies and renames)
    uploads/              files uploaded in the app
    indexes/<model>.faiss FAISS index per model key, with <model>.json manifest beside it
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import LibraryError
from core.media import write_atomic
from core.types import CollectionInfo, Hit, MediaRecord, Vectors
from core.vector_index import VectorIndex

SCHEMA_VERSION = 1
# Each migration brings the schema from version i to i+1, and says why it exists.
MIGRATIONS: list[str] = [
    # v1: the first schema. Media rows are unique per (collection, path): an image, or a video with
    # its sampled frames (status 'partial' while a video is being indexed, so a stopped run resumes).
    # An embedding row per (model, image) or (model, frame); AUTOINCREMENT so a deleted embedding's id is never reused, which keeps any
    # stale FAISS index from mapping an old id to a new vector. The generation counter moves on
    # every embedding change so that processes notice when their in-memory index is out of step.
    """
    CREATE TABLE collections(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE media(
        id INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
        sha256 TEXT,
        size INTEGER,
        mtime REAL,
        width INTEGER,
        height INTEGER,
        duration REAL,
        fps REAL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'partial')),
        error TEXT,
        note TEXT,
        sampling TEXT,
        thumb TEXT,
        added REAL NOT NULL,
        UNIQUE(collection_id, path)
    );
    CREATE INDEX media_sha256 ON media(sha256);
    CREATE TABLE frames(
        id INTEGER PRIMARY KEY,
        media_id INTEGER NOT NULL REFERENCES media(id) ON DELETE CASCADE,
        timestamp REAL NOT NULL,
        thumb TEXT NOT NULL,
        UNIQUE(media_id, timestamp)
    );
    CREATE TABLE embeddings(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model_key TEXT NOT NULL,
        media_id INTEGER NOT NULL REFERENCES media(id) ON DELETE CASCADE,
        frame_id INTEGER REFERENCES frames(id) ON DELETE CASCADE,
        vector BLOB NOT NULL
    );
    CREATE UNIQUE INDEX embeddings_of_images ON embeddings(model_key, media_id) WHERE frame_id IS NULL;
    CREATE UNIQUE INDEX embeddings_of_frames ON embeddings(model_key, frame_id) WHERE frame_id IS NOT NULL;
    CREATE INDEX embeddings_by_media ON embeddings(media_id);
    CREATE TABLE chunk_descriptions(
        video TEXT NOT NULL,
        chunking TEXT NOT NULL,
        chunk INTEGER NOT NULL,
        model_key TEXT NOT NULL,
        mode TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY(video, chunking, chunk, model_key, mode)
    );
    CREATE TABLE summaries(
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        title TEXT,
        created REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE captions(
        frame_id INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
        model_key TEXT NOT NULL,
        prompt TEXT NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY(frame_id, model_key, prompt)
    );
    CREATE TABLE index_generation(
        model_key TEXT PRIMARY KEY,
        generation INTEGER NOT NULL
    );
    CREATE TRIGGER embeddings_added AFTER INSERT ON embeddings BEGIN
        INSERT INTO index_generation(model_key, generation) VALUES (NEW.model_key, 1)
        ON CONFLICT(model_key) DO UPDATE SET generation = generation + 1;
    END;
    CREATE TRIGGER embeddings_removed AFTER DELETE ON embeddings BEGIN
        UPDATE index_generation SET generation = generation + 1 WHERE model_key = OLD.model_key;
    END;
    """,
]


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


def _safe_name(model_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_key)


class Library:
    """The persistent library in one data directory. Thread-safe; one instance serves all sessions.

    SQLite is the source of truth. Each model key has a FAISS index kept in memory, synced with the
    database before every search (cheaply: a generation counter says whether anything changed),
    and saved to disk after indexing runs so the next start does not rebuild it.
    """

    def __init__(self, home: Path, *, exact_search_limit: int = 50_000) -> None:
        self.home = Path(home)
        self.exact_search_limit = exact_search_limit
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryError(
                f"cannot create the data directory {self.home}: {exc.strerror or exc}"
            ) from exc
        self.db_path = self.home / "library.db"
        self.thumbs_dir = self.home / "thumbs"
        self.uploads_dir = self.home / "uploads"
        self.index_dir = self.home / "indexes"
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._index_lock = threading.RLock()
        self._indexes: dict[str, tuple[VectorIndex, int]] = {}  # model key -> (index, generation)
        self._saved_generation: dict[str, int] = {}
        self._migrate()

    # -- connections and schema ------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as exc:
                raise LibraryError(
                    f"{self.db_path} is not a usable library database: {exc}"
                ) from exc
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it lands, or none of it (also across a kill -9)."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same state of the database."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LibraryError(
                    f"{self.db_path} was written by a newer Framescope (schema {version}); upgrade Framescope to open it"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[step]):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- collections ---------------------------------------------------------------------

    def collection_id(self, name: str) -> int:
        """The id of a collection, created if new."""
        name = name.strip()
        if not name:
            raise LibraryError("a collection needs a name")
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO collections(name, created) VALUES (?, ?)",
                (name, time.time()),
            )
            return conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0]

    def collections(self) -> list[CollectionInfo]:
        rows = (
            self._conn()
            .execute(
                """
            SELECT c.name,
                   SUM(m.kind = 'image' AND m.status = 'ok') AS images,
                   SUM(m.kind = 'video' AND m.status != 'failed') AS videos,
                   SUM(m.status = 'failed') AS failed,
                   SUM(CASE WHEN m.status = 'ok' THEN m.size ELSE 0 END) AS bytes
            FROM collections c LEFT JOIN media m ON m.collection_id = c.id
            GROUP BY c.id ORDER BY c.name
            """
            )
            .fetchall()
        )
        return [
            CollectionInfo(
                r["name"], r["images"] or 0, r["videos"] or 0, r["failed"] or 0, r["bytes"] or 0
            )
            for r in rows
        ]

    # -- catalog reads -------------------------------------------------------------------

    def stored_files(
        self, collection_id: int, paths: Iterable[str] | None = None, under: str | None = None
    ) -> dict[str, StoredFile]:
        """Catalog rows of a collection by path: all, those in `paths`, or those under a folder."""
        conn = self._conn()
        query = "SELECT id, path, sha256, size, mtime, status, sampling FROM media WHERE collection_id = ?"
        args: list = [collection_id]
        if under is not None:
            prefix = under.rstrip("/") + "/"
            query += " AND substr(path, 1, ?) = ?"
            args += [len(prefix), prefix]
        rows = conn.execute(query, args).fetchall()
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
            self._conn()
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
            self._conn()
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
            self._conn()
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

    def media(
        self, *, collection: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[MediaRecord]:
        query = "SELECT m.*, c.name AS collection FROM media m JOIN collections c ON c.id = m.collection_id WHERE 1=1"
        args: list = []
        if collection is not None:
            query += " AND c.name = ?"
            args.append(collection)
        if status is not None:
            query += " AND m.status = ?"
            args.append(status)
        query += " ORDER BY m.added DESC, m.id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [self._record(r) for r in self._conn().execute(query, args).fetchall()]

    def _record(self, r: sqlite3.Row) -> MediaRecord:
        return MediaRecord(
            id=r["id"],
            collection=r["collection"],
            path=r["path"],
            name=r["name"],
            kind=r["kind"],
            status=r["status"],
            error=r["error"],
            sha256=r["sha256"],
            size_bytes=r["size"],
            width=r["width"],
            height=r["height"],
            thumbnail=self._thumb_path(r["thumb"]),
            duration=r["duration"],
            fps=r["fps"],
            note=r["note"],
        )

    def failed_files(self, collection: str | None = None) -> list[MediaRecord]:
        return self.media(collection=collection, status="failed")

    def counts(self, model_key: str | None = None) -> dict[str, int]:
        conn = self._conn()
        out = {
            "collections": conn.execute("SELECT COUNT(*) FROM collections").fetchone()[0],
            "images": conn.execute(
                "SELECT COUNT(*) FROM media WHERE kind='image' AND status='ok'"
            ).fetchone()[0],
            "videos": conn.execute(
                "SELECT COUNT(*) FROM media WHERE kind='video' AND status!='failed'"
            ).fetchone()[0],
            "failed": conn.execute("SELECT COUNT(*) FROM media WHERE status='failed'").fetchone()[
                0
            ],
        }
        if model_key is not None:
            out["embeddings"] = conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE model_key = ?", (model_key,)
            ).fetchone()[0]
        return out

    def model_keys(self) -> dict[str, int]:
        rows = (
            self._conn()
            .execute("SELECT model_key, COUNT(*) FROM embeddings GROUP BY model_key")
            .fetchall()
        )
        return {r[0]: r[1] for r in rows}

    # -- catalog writes ------------------------------------------------------------------

    def _thumb_rel(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256}.jpg"

    def _thumb_path(self, rel: str | None) -> str | None:
        return str(self.thumbs_dir / rel) if rel else None

    def add_images(
        self, collection_id: int, model_key: str, images: Sequence[NewImage]
    ) -> list[int]:
        """Write images with their thumbnails and embeddings, all in one transaction."""
        for img in images:
            if img.thumbnail is not None:
                target = self.thumbs_dir / self._thumb_rel(img.sha256)
                if not target.exists():
                    write_atomic(
                        target, img.thumbnail
                    )  # before the rows: a row never lacks its thumbnail
        ids = []
        now = time.time()
        with self._transaction() as conn:
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
                        self._thumb_rel(img.sha256),
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
                        raise LibraryError(
                            f"{img.path}: the embedding to copy (media {img.same_as}) is gone"
                        )
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
    ) -> None:
        """Remember a file that could not be indexed, and why; an older good row of the path is replaced."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM media WHERE collection_id = ? AND path = ?", (collection_id, path)
            )
            conn.execute(
                "INSERT INTO media(collection_id, path, name, kind, size, mtime, status, error, added) "
                "VALUES (?, ?, ?, ?, ?, ?, 'failed', ?, ?)",
                (collection_id, path, name, kind, size, mtime, reason, time.time()),
            )

    def touch(self, media_id: int, size: int, mtime: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE media SET size = ?, mtime = ? WHERE id = ?", (size, mtime, media_id)
            )

    def rename(self, media_id: int, path: str, name: str, mtime: float) -> None:
        """A file moved: the row (and its embeddings) follows it."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE media SET path = ?, name = ?, mtime = ? WHERE id = ?",
                (path, name, mtime, media_id),
            )

    def remove_media(self, media_ids: Sequence[int]) -> int:
        """Drop rows (their frames and embeddings go with them) and thumbnails no longer used."""
        removed, shas = 0, set()
        with self._transaction() as conn:
            for start in range(0, len(media_ids), 900):
                chunk = list(media_ids[start : start + 900])
                marks = ",".join("?" * len(chunk))
                shas |= {
                    r[0]
                    for r in conn.execute(f"SELECT sha256 FROM media WHERE id IN ({marks})", chunk)
                    if r[0]
                }
                removed += conn.execute(f"DELETE FROM media WHERE id IN ({marks})", chunk).rowcount
            orphaned = [
                sha
                for sha in shas
                if conn.execute("SELECT 1 FROM media WHERE sha256 = ? LIMIT 1", (sha,)).fetchone()
                is None
            ]
        for sha in orphaned:
            (self.thumbs_dir / self._thumb_rel(sha)).unlink(missing_ok=True)
            shutil.rmtree(self.thumbs_dir / self._frames_rel(sha), ignore_errors=True)
        return removed

    # -- videos ----------------------------------------------------------------------------

    def _frames_rel(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256}-frames"

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
    ) -> int:
        """A video row in state 'partial': its frames are added batch by batch, then finish_video."""
        with self._transaction() as conn:
            if replaces is not None:
                conn.execute("DELETE FROM media WHERE id = ?", (replaces,))
            conn.execute(
                "DELETE FROM media WHERE collection_id = ? AND path = ?", (collection_id, path)
            )
            cur = conn.execute(
                "INSERT INTO media(collection_id, path, name, kind, sha256, size, mtime, width, height, "
                "duration, fps, status, sampling, added) VALUES (?, ?, ?, 'video', ?, ?, ?, ?, ?, ?, ?, 'partial', ?, ?)",
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
            rel = f"{self._frames_rel(sha256)}/{round(frame.timestamp * 1000):010d}.jpg"
            target = self.thumbs_dir / rel
            if not target.exists():
                write_atomic(target, frame.thumbnail)
            rels.append(rel)
        with self._transaction() as conn:
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

    def frames_of(self, media_id: int) -> list[tuple[int, float, str]]:
        """(frame id, timestamp, image path) of a video's stored frames, in time order."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, timestamp, thumb FROM frames WHERE media_id = ? ORDER BY timestamp",
                (media_id,),
            )
            .fetchall()
        )
        return [(r[0], r[1], str(self.thumbs_dir / r[2])) for r in rows]

    def frame_vectors(self, media_id: int, model_key: str) -> Vectors:
        """CLIP vectors of a video's frames, in time order."""
        rows = (
            self._conn()
            .execute(
                "SELECT e.id, e.vector FROM embeddings e JOIN frames f ON f.id = e.frame_id "
                "WHERE e.media_id = ? AND e.model_key = ? ORDER BY f.timestamp",
                (media_id, model_key),
            )
            .fetchall()
        )
        return _unpack(rows)[1]

    def captions_for(self, media_id: int, model_key: str, prompt: str) -> dict[int, str]:
        """Stored captions of a video's frames by one captioning model and prompt: {frame id: text}."""
        rows = (
            self._conn()
            .execute(
                "SELECT c.frame_id, c.text FROM captions c JOIN frames f ON f.id = c.frame_id "
                "WHERE f.media_id = ? AND c.model_key = ? AND c.prompt = ?",
                (media_id, model_key, prompt),
            )
            .fetchall()
        )
        return {r[0]: r[1] for r in rows}

    def add_captions(self, model_key: str, prompt: str, captions: dict[int, str]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO captions(frame_id, model_key, prompt, text) VALUES (?, ?, ?, ?)",
                [(frame_id, model_key, prompt, text) for frame_id, text in captions.items()],
            )

    def captions_in_scope(self, media_ids: Sequence[int]) -> list[tuple[int, int, str]]:
        """(frame id, media id, caption text) of every captioned frame of the given videos."""
        if not media_ids:
            return []
        rows = (
            self._conn()
            .execute(
                "SELECT c.frame_id, f.media_id, c.text FROM captions c JOIN frames f ON f.id = c.frame_id "
                f"WHERE f.media_id IN ({','.join('?' * len(media_ids))})",
                list(media_ids),
            )
            .fetchall()
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def frame_ids(self, embedding_ids: Sequence[int]) -> dict[int, int]:
        """{embedding id: frame id} for the given embeddings of video frames."""
        out: dict[int, int] = {}
        ids = list(embedding_ids)
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            rows = self._conn().execute(
                f"SELECT id, frame_id FROM embeddings WHERE frame_id IS NOT NULL AND id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            out.update({r[0]: r[1] for r in rows})
        return out

    def chunk_descriptions(
        self, video: str, chunking: str, model_key: str, mode: str
    ) -> dict[int, str]:
        """Cached descriptions of a video's chunks: {chunk index: text}."""
        rows = (
            self._conn()
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
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO chunk_descriptions(video, chunking, chunk, model_key, mode, start, end, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (video, chunking, chunk, model_key, mode, start, end, text),
            )

    def add_summary(self, source: str, title: str | None, data: str) -> int:
        with self._transaction() as conn:
            return conn.execute(
                "INSERT INTO summaries(source, title, created, data) VALUES (?, ?, ?, ?)",
                (source, title, time.time(), data),
            ).lastrowid

    def summaries(self, limit: int = 50) -> list[tuple[int, str, str | None, float, str]]:
        """Stored summaries, newest first: (id, source, title, created, JSON)."""
        return [
            tuple(r)
            for r in self._conn()
            .execute(
                "SELECT id, source, title, created, data FROM summaries ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        ]

    def finish_video(self, media_id: int, note: str | None = None) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE media SET status = 'ok', note = ? WHERE id = ?", (note, media_id))

    def video_resume_point(
        self, media_id: int, model_key: str
    ) -> tuple[float | None, np.ndarray | None]:
        """Timestamp and vector of the last frame stored for a partially indexed video."""
        row = (
            self._conn()
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

    def videos(self, collections: Sequence[str] | None = None) -> list[MediaRecord]:
        """Videos in the library (indexed or partly indexed), newest first."""
        return [
            r
            for r in self.media()
            if r.kind == "video"
            and r.status != "failed"
            and (collections is None or r.collection in collections)
        ]

    def frame_count(self, media_id: int) -> int:
        return (
            self._conn()
            .execute("SELECT COUNT(*) FROM frames WHERE media_id = ?", (media_id,))
            .fetchone()[0]
        )

    # -- vectors and search --------------------------------------------------------------

    def vectors(
        self, model_key: str, ids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, Vectors]:
        """(ids, vectors) stored for a model: all, or those of the given embedding ids that exist."""
        conn = self._conn()
        if ids is None:
            rows = conn.execute(
                "SELECT id, vector FROM embeddings WHERE model_key = ? ORDER BY id", (model_key,)
            ).fetchall()
        else:
            rows = []
            ids = list(ids)
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                rows += conn.execute(
                    f"SELECT id, vector FROM embeddings WHERE model_key = ? AND id IN ({','.join('?' * len(chunk))})",
                    [model_key, *chunk],
                ).fetchall()
        return _unpack(rows)

    def embedding_ids(
        self,
        model_key: str,
        collections: Sequence[str] | None = None,
        *,
        kinds: Sequence[str] | None = None,
        media_ids: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Embedding ids of a scope: everything, or restricted by collection, kind and media."""
        query, args = _scope_query("e.id", model_key, collections, kinds, media_ids)
        rows = self._conn().execute(query, args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def scope_frames(
        self,
        model_key: str,
        collections: Sequence[str] | None = None,
        *,
        kinds: Sequence[str] | None = None,
        media_ids: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Vectors]:
        """(embedding ids, media ids, timestamps (NaN for images), vectors) of a scope, in time order."""
        query, args = _scope_query(
            "e.id, e.media_id, COALESCE(f.timestamp, 'nan'), e.vector",
            model_key,
            collections,
            kinds,
            media_ids,
        )
        rows = self._conn().execute(query + " ORDER BY e.media_id, f.timestamp", args).fetchall()
        if not rows:
            return (
                np.empty(0, np.int64),
                np.empty(0, np.int64),
                np.empty(0),
                np.empty((0, 0), np.float32),
            )
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        media = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        times = np.fromiter((float(r[2]) for r in rows), dtype=np.float64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(
            len(rows), -1
        )
        return ids, media, times, vectors

    def embedding_of(self, embedding_id: int) -> tuple[str, np.ndarray]:
        row = (
            self._conn()
            .execute("SELECT model_key, vector FROM embeddings WHERE id = ?", (embedding_id,))
            .fetchone()
        )
        if row is None:
            raise LibraryError(f"item {embedding_id} is no longer in the library")
        return row[0], np.frombuffer(row[1], dtype=np.float32).copy()

    def _generation(self, conn: sqlite3.Connection, model_key: str) -> int:
        row = conn.execute(
            "SELECT generation FROM index_generation WHERE model_key = ?", (model_key,)
        ).fetchone()
        return row[0] if row else 0

    def _index_path(self, model_key: str) -> Path:
        return self.index_dir / f"{_safe_name(model_key)}.faiss"

    def index_for(self, model_key: str, dim: int) -> VectorIndex:
        """The in-memory index of a model, loaded or rebuilt as needed and in step with SQLite."""
        with self._index_lock:
            live = self._indexes.get(model_key)
            conn = self._conn()
            if live is not None and live[1] == self._generation(conn, model_key):
                return live[0]
            with self._snapshot() as snap:
                generation = self._generation(snap, model_key)
                db_ids = np.fromiter(
                    (
                        r[0]
                        for r in snap.execute(
                            "SELECT id FROM embeddings WHERE model_key = ?", (model_key,)
                        )
                    ),
                    dtype=np.int64,
                )
                index = (
                    live[0]
                    if live is not None
                    else VectorIndex.load(self._index_path(model_key), model_key, dim)
                )
                if index is not None and index.manifest.dim != dim:
                    raise LibraryError(
                        f"the index of {model_key} has dimension {index.manifest.dim}, the model gives {dim}"
                    )
                if index is None or index.should_rebuild(len(db_ids), self.exact_search_limit):
                    ids, vectors = _unpack(
                        snap.execute(
                            "SELECT id, vector FROM embeddings WHERE model_key = ? ORDER BY id",
                            (model_key,),
                        ).fetchall()
                    )
                    index = VectorIndex.build(
                        model_key,
                        dim,
                        ids,
                        vectors.reshape(-1, dim),
                        exact_limit=self.exact_search_limit,
                    )
                else:
                    have = index.ids()
                    stale = np.setdiff1d(have, db_ids, assume_unique=True)
                    missing = np.setdiff1d(db_ids, have, assume_unique=True)
                    index.remove(stale)
                    if len(missing):
                        rows = []
                        missing_list = missing.tolist()
                        for start in range(0, len(missing_list), 900):
                            chunk = missing_list[start : start + 900]
                            rows += snap.execute(
                                f"SELECT id, vector FROM embeddings WHERE id IN ({','.join('?' * len(chunk))})",
                                chunk,
                            ).fetchall()
                        ids, vectors = _unpack(rows)
                        index.add(ids, vectors.reshape(-1, dim))
            self._indexes[model_key] = (index, generation)
            return index

    def save_index(self, model_key: str, dim: int) -> None:
        """Persist the in-memory index of a model if it changed since it was last saved."""
        with self._index_lock:
            index = self.index_for(model_key, dim)
            generation = self._indexes[model_key][1]
            if (
                self._saved_generation.get(model_key) == generation
                and self._index_path(model_key).exists()
            ):
                return
            index.save(self._index_path(model_key))
            self._saved_generation[model_key] = generation

    def search_vectors(
        self,
        model_key: str,
        query: np.ndarray,
        k: int,
        collections: Sequence[str] | None = None,
        *,
        kinds: Sequence[str] | None = None,
        media_ids: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (embedding id, cosine) for one unit query vector, optionally within a scope."""
        dim = int(query.shape[-1])
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, dim)
        allowed = None
        if collections is not None or kinds is not None or media_ids is not None:
            allowed = self.embedding_ids(model_key, collections, kinds=kinds, media_ids=media_ids)
            if len(allowed) <= self.exact_search_limit:
                ids, vectors = self.vectors(model_key, allowed.tolist())
                return _exact_top_k(ids, vectors.reshape(-1, dim), q[0], k)
        with self._index_lock:
            index = self.index_for(model_key, dim)
            if index.ntotal == 0:
                return []
            scores, ids = index.search(q, k, allowed)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def sample_vectors(
        self,
        model_key: str,
        n: int,
        collections: Sequence[str] | None = None,
        seed: int = 0,
        *,
        kinds: Sequence[str] | None = None,
        media_ids: Sequence[int] | None = None,
    ) -> Vectors:
        """Up to n stored vectors drawn at random from the scope (to estimate a score distribution)."""
        rng = np.random.default_rng(seed)
        if collections is not None or kinds is not None or media_ids is not None:
            ids = self.embedding_ids(model_key, collections, kinds=kinds, media_ids=media_ids)
            if len(ids) > n:
                ids = rng.choice(ids, size=n, replace=False)
            return self.vectors(model_key, ids.tolist())[1]
        # The whole library: draw from the id range (ids are dense but for deletions), not a full scan.
        lo, hi, count = (
            self._conn()
            .execute(
                "SELECT MIN(id), MAX(id), COUNT(*) FROM embeddings WHERE model_key = ?",
                (model_key,),
            )
            .fetchone()
        )
        if not count:
            return np.empty((0, 0), np.float32)
        if count <= n:
            return self.vectors(model_key)[1]
        span = hi - lo + 1
        draw = min(span, int(n * span / count * 1.2) + 16)
        ids, vectors = self.vectors(
            model_key, (rng.choice(span, size=draw, replace=False) + lo).tolist()
        )
        return vectors[:n]

    def hits(self, scored: Sequence[tuple[int, float]]) -> list[Hit]:
        """Hits for (embedding id, score) pairs, in the same order; ids no longer stored are dropped."""
        if not scored:
            return []
        ids = [i for i, _ in scored]
        rows = (
            self._conn()
            .execute(
                "SELECT e.id AS eid, m.*, c.name AS collection, f.id AS frame_id, f.timestamp AS frame_time, "
                "f.thumb AS frame_thumb FROM embeddings e JOIN media m ON m.id = e.media_id "
                "JOIN collections c ON c.id = m.collection_id LEFT JOIN frames f ON f.id = e.frame_id "
                f"WHERE e.id IN ({','.join('?' * len(ids))})",
                ids,
            )
            .fetchall()
        )
        by_id = {r["eid"]: r for r in rows}
        out = []
        for eid, score in scored:
            r = by_id.get(eid)
            if r is None:
                continue
            out.append(
                Hit(
                    embedding_id=eid,
                    media_id=r["id"],
                    path=r["path"],
                    name=r["name"],
                    kind=r["kind"],
                    collection=r["collection"],
                    score=round(float(score), 6),
                    size_bytes=r["size"],
                    width=r["width"],
                    height=r["height"],
                    thumbnail=self._thumb_path(r["frame_thumb"] or r["thumb"]),
                    timestamp=r["frame_time"],
                    frame_id=r["frame_id"],
                )
            )
        return out


def _scope_query(
    columns: str,
    model_key: str,
    collections: Sequence[str] | None,
    kinds: Sequence[str] | None,
    media_ids: Sequence[int] | None,
) -> tuple[str, list]:
    query = (
        f"SELECT {columns} FROM embeddings e JOIN media m ON m.id = e.media_id "
        "JOIN collections c ON c.id = m.collection_id LEFT JOIN frames f ON f.id = e.frame_id "
        "WHERE e.model_key = ?"
    )
    args: list = [model_key]
    for column, values in (("c.name", collections), ("m.kind", kinds), ("m.id", media_ids)):
        if values is not None:
            query += f" AND {column} IN ({','.join('?' * len(values))})"
            args += list(values)
    return query, args


def _unpack(rows: Sequence) -> tuple[np.ndarray, Vectors]:
    if not rows:
        return np.empty(0, np.int64), np.empty((0, 0), np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    return ids, vectors


def _exact_top_k(
    ids: np.ndarray, vectors: Vectors, query: np.ndarray, k: int
) -> list[tuple[int, float]]:
    if len(ids) == 0:
        return []
    scores = vectors @ query
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((ids[top], -scores[top]))]
    return [(int(ids[i]), float(scores[i])) for i in top]


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script; trigger bodies keep their inner semicolons."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and (
            not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")
        ):
            statements.append(text)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements
