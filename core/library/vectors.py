"""What search reads: stored embeddings by scope, the FAISS index kept in step with them, hits."""

from __future__ import annotations

import copy
import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import LibraryError
from core.library.db import Database
from core.library.index import VectorIndex
from core.library.visibility import EVERYONE, Visibility
from core.types import Hit, Vectors


def _safe_name(model_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_key)


class VectorStore:
    """Embeddings per model, and for each model key a FAISS index kept in memory.

    The index is synced with the database before every search (cheaply: a generation counter says
    whether anything changed), and saved to disk after indexing runs so the next start does not
    rebuild it.
    """

    def __init__(
        self, db: Database, index_dir: Path, thumbs_dir: Path, *, exact_search_limit: int
    ) -> None:
        self.db = db
        self.index_dir = index_dir
        self.thumbs_dir = thumbs_dir
        self.exact_search_limit = exact_search_limit
        self.visibility = EVERYONE
        self._index_lock = threading.RLock()
        self._indexes: dict[str, tuple[VectorIndex, int]] = {}  # model key -> (index, generation)
        self._saved_generation: dict[str, int] = {}

    def scoped(self, visibility: Visibility) -> VectorStore:
        """The same store (one FAISS cache) as one user sees it: every query keeps to the
        collections that user may see."""
        view = copy.copy(self)
        view.visibility = visibility
        return view

    # -- stored vectors ------------------------------------------------------------------------

    def load(self, model_key: str, ids: Sequence[int] | None = None) -> tuple[np.ndarray, Vectors]:
        """(ids, vectors) stored for a model: all, or those of the given embedding ids that exist."""
        if ids is None:
            rows = (
                self.db.conn()
                .execute(
                    "SELECT id, vector FROM embeddings WHERE model_key = ? ORDER BY id",
                    (model_key,),
                )
                .fetchall()
            )
        else:
            rows = self.db.rows_in(
                "SELECT id, vector FROM embeddings WHERE model_key = ? AND id IN ({ids})",
                ids,
                before=[model_key],
            )
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
        query, args = _scope_query(
            self.visibility, "e.id", model_key, collections, kinds, media_ids
        )
        rows = self.db.conn().execute(query, args).fetchall()
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
            self.visibility,
            "e.id, e.media_id, COALESCE(f.timestamp, 'nan'), e.vector",
            model_key,
            collections,
            kinds,
            media_ids,
        )
        rows = self.db.conn().execute(query + " ORDER BY e.media_id, f.timestamp", args).fetchall()
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
        visible, args = self.visibility.sql()
        row = (
            self.db.conn()
            .execute(
                "SELECT e.model_key, e.vector FROM embeddings e JOIN media m ON m.id = e.media_id "
                f"JOIN collections c ON c.id = m.collection_id WHERE e.id = ?{visible}",
                [embedding_id, *args],
            )
            .fetchone()
        )
        if row is None:
            raise LibraryError(f"item {embedding_id} is no longer in the library")
        return row[0], np.frombuffer(row[1], dtype=np.float32).copy()

    def frame_vectors(self, media_id: int, model_key: str) -> Vectors:
        """CLIP vectors of a video's frames, in time order."""
        visible, args = self.visibility.sql()
        rows = (
            self.db.conn()
            .execute(
                "SELECT e.id, e.vector FROM embeddings e JOIN frames f ON f.id = e.frame_id "
                "JOIN media m ON m.id = e.media_id JOIN collections c ON c.id = m.collection_id "
                f"WHERE e.media_id = ? AND e.model_key = ?{visible} ORDER BY f.timestamp",
                [media_id, model_key, *args],
            )
            .fetchall()
        )
        return _unpack(rows)[1]

    def frame_ids(self, embedding_ids: Sequence[int]) -> dict[int, int]:
        """{embedding id: frame id} for the given embeddings of video frames."""
        rows = self.db.rows_in(
            "SELECT id, frame_id FROM embeddings WHERE frame_id IS NOT NULL AND id IN ({ids})",
            embedding_ids,
        )
        return {r[0]: r[1] for r in rows}

    # -- the FAISS cache -----------------------------------------------------------------------

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
            if live is not None and live[1] == self._generation(self.db.conn(), model_key):
                return live[0]
            with self.db.snapshot() as snap:
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
                        # Inside the snapshot: the same state of the database as db_ids.
                        ids, vectors = _unpack(
                            self.db.rows_in(
                                "SELECT id, vector FROM embeddings WHERE id IN ({ids})",
                                missing.tolist(),
                            )
                        )
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

    # -- search --------------------------------------------------------------------------------

    def search(
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
        if _limited(self.visibility, collections, kinds, media_ids):
            allowed = self.embedding_ids(model_key, collections, kinds=kinds, media_ids=media_ids)
            if len(allowed) <= self.exact_search_limit:
                ids, vectors = self.load(model_key, allowed.tolist())
                return _exact_top_k(ids, vectors.reshape(-1, dim), q[0], k)
        with self._index_lock:
            index = self.index_for(model_key, dim)
            if index.ntotal == 0:
                return []
            scores, ids = index.search(q, k, allowed)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def sample(
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
        if _limited(self.visibility, collections, kinds, media_ids):
            ids = self.embedding_ids(model_key, collections, kinds=kinds, media_ids=media_ids)
            if len(ids) > n:
                ids = rng.choice(ids, size=n, replace=False)
            return self.load(model_key, ids.tolist())[1]
        # The whole library: draw from the id range (ids are dense but for deletions), not a full scan.
        lo, hi, count = (
            self.db.conn()
            .execute(
                "SELECT MIN(id), MAX(id), COUNT(*) FROM embeddings WHERE model_key = ?",
                (model_key,),
            )
            .fetchone()
        )
        if not count:
            return np.empty((0, 0), np.float32)
        if count <= n:
            return self.load(model_key)[1]
        span = hi - lo + 1
        draw = min(span, int(n * span / count * 1.2) + 16)
        ids, vectors = self.load(
            model_key, (rng.choice(span, size=draw, replace=False) + lo).tolist()
        )
        return vectors[:n]

    def hits(self, scored: Sequence[tuple[int, float]]) -> list[Hit]:
        """Hits for (embedding id, score) pairs, in the same order; ids no longer stored are dropped."""
        if not scored:
            return []
        rows = self.db.rows_in(
            "SELECT e.id AS eid, m.*, c.name AS collection, f.id AS frame_id, f.timestamp AS frame_time, "
            "f.thumb AS frame_thumb FROM embeddings e JOIN media m ON m.id = e.media_id "
            "JOIN collections c ON c.id = m.collection_id LEFT JOIN frames f ON f.id = e.frame_id "
            "WHERE e.id IN ({ids})",
            [i for i, _ in scored],
        )
        by_id = {r["eid"]: r for r in rows}
        out = []
        for eid, score in scored:
            r = by_id.get(eid)
            if r is None or not self.visibility.sees(r["collection"]):
                continue
            thumb = r["frame_thumb"] or r["thumb"]
            out.append(
                Hit(
                    embedding_id=eid,
                    media_id=r["id"],
                    path=r["path"],
                    name=r["name"],
                    kind=r["kind"],
                    collection=self.visibility.shown_name(r["collection"]),
                    score=round(float(score), 6),
                    size_bytes=r["size"],
                    width=r["width"],
                    height=r["height"],
                    thumbnail=str(self.thumbs_dir / thumb) if thumb else None,
                    timestamp=r["frame_time"],
                    frame_id=r["frame_id"],
                    sha256=r["sha256"],
                )
            )
        return out


def _limited(visibility: Visibility, collections, kinds, media_ids) -> bool:
    """Whether a query must keep to a part of the library (a user only sees theirs)."""
    return any(x is not None for x in (collections, kinds, media_ids, visibility.user))


def _scope_query(
    visibility: Visibility,
    columns: str,
    model_key: str,
    collections: Sequence[str] | None,
    kinds: Sequence[str] | None,
    media_ids: Sequence[int] | None,
) -> tuple[str, list]:
    visible, args = visibility.sql()
    query = (
        f"SELECT {columns} FROM embeddings e JOIN media m ON m.id = e.media_id "
        "JOIN collections c ON c.id = m.collection_id LEFT JOIN frames f ON f.id = e.frame_id "
        f"WHERE e.model_key = ?{visible}"
    )
    args = [model_key, *args]
    names = visibility.stored_names(collections)
    for column, values in (("c.name", names), ("m.kind", kinds), ("m.id", media_ids)):
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
