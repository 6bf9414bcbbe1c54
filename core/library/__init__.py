"""The library: a SQLite catalog (the source of truth) with embeddings, and FAISS indexes as caches.

Layout of `FRAMESCOPE_HOME`:
    library.db            SQLite (WAL): collections, media, frames, embeddings, captions, summaries
    thumbs/ab/abcdef.jpg  thumbnails, named by the file's sha256 (shared by copies and renames)
    uploads/              files uploaded in the app
    indexes/<model>.faiss FAISS index per model key, with <model>.json manifest beside it

Modules, by who calls them:
    db           the SQLite file: connections, transactions, migrations, chunked `IN` queries
    catalog      collections, media and frames as the pages list them
    ingest       what indexing writes (images, videos, frames, embeddings, failures)
    vectors      what search reads: embeddings by scope, the FAISS cache, hits
    annotations  captions, chunk descriptions and summaries
    index        the FAISS index itself (exact or IVF), saved with a manifest
"""

from __future__ import annotations

from pathlib import Path

from core.errors import LibraryError
from core.library.annotations import Annotations
from core.library.catalog import Catalog
from core.library.db import Database
from core.library.index import VectorIndex
from core.library.ingest import Ingest, NewFrame, NewImage, StoredFile
from core.library.vectors import VectorStore

__all__ = [
    "Annotations",
    "Catalog",
    "Database",
    "Ingest",
    "Library",
    "NewFrame",
    "NewImage",
    "StoredFile",
    "VectorIndex",
    "VectorStore",
]


class Library:
    """The persistent library in one data directory. Thread-safe; one instance serves all sessions.

    Its parts share one database: `catalog` (what is there), `ingest` (what indexing writes),
    `vectors` (what search reads) and `annotations` (what models said about it).
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
        self.db = Database(self.db_path)
        self.catalog = Catalog(self.db, self.thumbs_dir)
        self.ingest = Ingest(self.db, self.thumbs_dir)
        self.vectors = VectorStore(
            self.db, self.index_dir, self.thumbs_dir, exact_search_limit=exact_search_limit
        )
        self.annotations = Annotations(self.db)

    def close(self) -> None:
        """Close this thread's database connection."""
        self.db.close()
