"""The library database: one SQLite file (WAL), its connections, transactions and migrations.

Every SQLite error met through a connection of a `Database` (a damaged page, a full disk, a lock
held too long) is raised as a LibraryError that names the file, says what happened and how to
recover, instead of a traceback from deep inside a query.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from core.errors import LibraryError

SCHEMA_VERSION = 3
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
    # v2: the web link a video was fetched from (NULL for files indexed from this machine). A video
    # fetched from a link keeps it, so that the same link given again finds the video already in
    # the collection (nothing fetched or indexed twice), and the pages can say where it came from.
    # The index serves that look-up: a collection's rows by link.
    """
    ALTER TABLE media ADD COLUMN url TEXT;
    CREATE INDEX media_url ON media(collection_id, url) WHERE url IS NOT NULL;
    """,
    # v3: what is said and written. A transcript belongs to a file's content (sha256) and audio
    # track, not to a media row: copies share it, and sampling a video again (which replaces its
    # row and frames) keeps an hour of transcription. Its source is 'speech' (an ASR model,
    # `model` names it) or 'subtitles' (a subtitle stream of the file, or those fetched with its
    # link). A 'partial' transcript holds its segments up to `done_until` seconds, where a stopped
    # run resumes. On-screen text belongs to a frame (or to an image: frame_id NULL); a row with
    # empty text says the frame was read and holds none.
    """
    CREATE TABLE transcripts(
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL,
        track INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL CHECK (source IN ('speech', 'subtitles')),
        model TEXT NOT NULL,
        language TEXT,
        status TEXT NOT NULL CHECK (status IN ('partial', 'ok')),
        done_until REAL NOT NULL DEFAULT 0,
        note TEXT,
        updated REAL NOT NULL,
        UNIQUE(sha256, track, source, model)
    );
    CREATE TABLE transcript_segments(
        transcript_id INTEGER NOT NULL REFERENCES transcripts(id) ON DELETE CASCADE,
        start REAL NOT NULL,
        end REAL NOT NULL,
        text TEXT NOT NULL,
        language TEXT
    );
    CREATE INDEX transcript_segments_by_time ON transcript_segments(transcript_id, start);
    CREATE TABLE frame_text(
        media_id INTEGER NOT NULL REFERENCES media(id) ON DELETE CASCADE,
        frame_id INTEGER REFERENCES frames(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        text TEXT NOT NULL,
        boxes TEXT NOT NULL
    );
    CREATE UNIQUE INDEX frame_text_of_images ON frame_text(model, media_id) WHERE frame_id IS NULL;
    CREATE UNIQUE INDEX frame_text_of_frames ON frame_text(model, frame_id) WHERE frame_id IS NOT NULL;
    CREATE INDEX frame_text_by_media ON frame_text(media_id);
    """,
]

# SQLite allows 999 bound parameters per statement in older builds: ids go in groups below that.
IN_CHUNK = 900


def chunks(ids: Sequence[int], size: int = IN_CHUNK) -> Iterator[list[int]]:
    """`ids` in lists of at most `size`, for `... IN (?, ?, ...)` queries."""
    ids = list(ids)
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def marks(n: int) -> str:
    """`?,?,?` for n bound parameters."""
    return ",".join("?" * n)


# SQLite's primary result codes that say something other than "the file is damaged".
_BUSY, _PERM, _LOCKED, _READONLY, _FULL, _CANTOPEN = 5, 3, 6, 8, 13, 14


def library_error(path: Path, exc: sqlite3.Error) -> LibraryError:
    """The LibraryError a user reads for an SQLite error on the library database at `path`."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_BUSY, _LOCKED):
        message = (
            f"the library database {path} stayed locked by another process for too long ({exc}); "
            "try again when the other indexing run or app has finished"
        )
    elif code == _FULL:
        message = (
            f"the disk holding the library database {path} is full ({exc}); "
            "free some space and try again"
        )
    elif code in (_READONLY, _PERM, _CANTOPEN):
        message = (
            f"the library database {path} cannot be written or opened ({exc}); "
            "check its permissions and those of its folder"
        )
    else:
        return damaged(path, str(exc))
    return LibraryError(message)


def damaged(path: Path, detail: str) -> LibraryError:
    """The LibraryError for a damaged library database: what SQLite said, and the way out."""
    return LibraryError(
        f"the library database {path} is damaged ({detail}). Check it with: "
        f"sqlite3 '{path}' 'PRAGMA integrity_check'. If that does not print 'ok', move "
        f"{path.name} (with any {path.name}-wal and {path.name}-shm beside it) aside and "
        "index your folders again: embeddings and thumbnails are rebuilt from the files "
        "(captions and summaries stored in it may be saved with sqlite3's .recover)"
    )


def _checked(method):
    """`method` of a cursor, its SQLite errors raised as LibraryErrors (except those of the code
    using it: a closed connection or a wrong number of parameters stay ProgrammingErrors)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.ProgrammingError):
                raise
            raise library_error(self.connection.library_path, exc) from exc

    return run


class _Cursor(sqlite3.Cursor):
    """A cursor whose SQLite errors, from a query or while fetching its rows, are LibraryErrors."""

    execute = _checked(sqlite3.Cursor.execute)
    executemany = _checked(sqlite3.Cursor.executemany)
    fetchone = _checked(sqlite3.Cursor.fetchone)
    fetchmany = _checked(sqlite3.Cursor.fetchmany)
    fetchall = _checked(sqlite3.Cursor.fetchall)
    __next__ = _checked(sqlite3.Cursor.__next__)


class _Connection(sqlite3.Connection):
    """A connection whose statements run on `_Cursor`s: SQLite errors become LibraryErrors."""

    library_path: Path

    def cursor(self, factory=_Cursor):
        return super().cursor(factory)

    def execute(self, sql, parameters=(), /):
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql, seq_of_parameters, /):
        return self.cursor().executemany(sql, seq_of_parameters)


class Database:
    """The SQLite file of a library: a connection per thread, serialized writes, migrations."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.write_lock = threading.RLock()
        self._migrate()

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (made on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=60, isolation_level=None, factory=_Connection
                )
                conn.library_path = self.path
                sqlite3.Connection.execute(conn, "PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as exc:
                raise LibraryError(f"{self.path} is not a usable library database: {exc}") from exc
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it lands, or none of it (also across a kill -9)."""
        conn = self.conn()
        with self.write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (a damaged page)
                    with contextlib.suppress(LibraryError):
                        conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same state of the database."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(LibraryError):
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def rows_in(
        self, query: str, ids: Sequence[int], *, before: Sequence = (), after: Sequence = ()
    ) -> list[sqlite3.Row]:
        """Rows of `query`, whose `{ids}` stands for a list of marks, run over `ids` in chunks."""
        out: list[sqlite3.Row] = []
        conn = self.conn()
        for chunk in chunks(ids):
            out += conn.execute(
                query.format(ids=marks(len(chunk))), [*before, *chunk, *after]
            ).fetchall()
        return out

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LibraryError(
                    f"{self.path} was written by a newer Framescope (schema {version}); upgrade Framescope to open it"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[step]):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def check(self, max_problems: int = 20) -> list[str]:
        """SQLite's quick check of the whole file: [] when it is sound, else what it found."""
        try:
            rows = self.conn().execute(f"PRAGMA quick_check({int(max_problems)})").fetchall()
        except LibraryError as exc:  # so damaged that the check itself cannot run
            return [str(exc.__cause__ or exc)]
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


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
