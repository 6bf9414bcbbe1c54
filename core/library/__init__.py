"""The library: a SQLite catalog (the source of truth) with embeddings, and FAISS indexes as caches.

Layout of `FRAMESCOPE_HOME`:
    library.db            SQLite (WAL): collections, media, frames, embeddings, captions, summaries,
                          transcripts, on-screen text
    thumbs/ab/abcdef.jpg  thumbnails, named by the file's sha256 (shared by copies and renames)
    uploads/              files uploaded in the app
    indexes/<model>.faiss FAISS index per model key, with <model>.json manifest beside it
    locks/<hash>.lock     one lock file per collection, held by the indexing run writing to it

Modules, by who calls them:
    db           the SQLite file: connections, transactions, migrations, chunked `IN` queries
    catalog      collections, media and frames as the pages list them
    ingest       what indexing writes (images, videos, frames, embeddings, failures)
    vectors      what search reads: embeddings by scope, the FAISS cache, hits
    annotations  captions, chunk descriptions and summaries
    texts        transcripts of audio tracks, and the text read in images and frames (OCR)
    visibility   who sees what in a shared deployment: each user's collections are theirs
    index        the FAISS index itself (exact or IVF), saved with a manifest
    locks        one indexing run per collection at a time, across processes (a lock file each)
"""

from __future__ import annotations

import copy
from pathlib import Path

from core.errors import LibraryError
from core.library.annotations import Annotations
from core.library.catalog import Catalog
from core.library.db import Database
from core.library.index import VectorIndex
from core.library.ingest import Ingest, NewFrame, NewImage, StoredFile
from core.library.locks import CollectionLock
from core.library.texts import ReadText, ScopeSegment, Texts
from core.library.vectors import VectorStore
from core.library.visibility import Visibility, check_user

__all__ = [
    "Annotations",
    "Catalog",
    "CollectionLock",
    "Database",
    "Ingest",
    "Library",
    "NewFrame",
    "NewImage",
    "ReadText",
    "ScopeSegment",
    "StoredFile",
    "Texts",
    "VectorIndex",
    "VectorStore",
    "Visibility",
]


class Library:
    """The persistent library in one data directory. Thread-safe; one instance serves all sessions.

    Its parts share one database: `catalog` (what is there), `ingest` (what indexing writes),
    `vectors` (what search reads), `annotations` (what models said about it) and `texts` (what is
    said and written in it).
    """

    def __init__(self, home: Path, *, exact_search_limit: int = 50_000) -> None:
        self.home = Path(home)
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
        self.locks_dir = self.home / "locks"
        self.db = Database(self.db_path)
        self.catalog = Catalog(self.db, self.thumbs_dir)
        self.ingest = Ingest(self.db, self.thumbs_dir)
        self.vectors = VectorStore(
            self.db, self.index_dir, self.thumbs_dir, exact_search_limit=exact_search_limit
        )
        self.annotations = Annotations(self.db)
        self.texts = Texts(self.db)

    def for_user(self, user: str | None) -> Library:
        """This library as one user of a shared deployment sees it: the operator's collections and
        their own, never another user's; what they add goes to their own collections. `None` is
        everyone (local mode). The view shares the database and the FAISS cache."""
        if user is None:
            return self
        visibility = Visibility(check_user(user))
        view = copy.copy(self)
        view.catalog = self.catalog.scoped(visibility)
        view.vectors = self.vectors.scoped(visibility)
        view.uploads_dir = self.uploads_dir / visibility.prefix.rstrip("/")
        return view

    @property
    def user(self) -> str | None:
        return self.catalog.visibility.user

    def collection_lock(self, collection: str) -> CollectionLock:
        """The lock an indexing run of `collection` holds, so that runs of it take turns."""
        return CollectionLock(self.locks_dir, collection)

    def close(self) -> None:
        """Close this thread's database connection."""
        self.db.close()
