"""The catalog: collections, media rows and their thumbnails, as the pages list them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from core.errors import LibraryError
from core.library.db import Database
from core.library.visibility import EVERYONE, Visibility
from core.types import CollectionInfo, MediaRecord


def thumb_rel(sha256: str) -> str:
    """Where an image's thumbnail lives under `thumbs/`, named by its content (shared by copies)."""
    return f"{sha256[:2]}/{sha256}.jpg"


def frames_rel(sha256: str) -> str:
    """The folder under `thumbs/` that holds a video's sampled frames."""
    return f"{sha256[:2]}/{sha256}-frames"


class Catalog:
    """What the library holds: collections, images and videos with their status, and frames.

    Reads only (but for creating a collection); what indexing writes is in `core.library.ingest`.
    In a shared deployment each user's catalog is `scoped` to what they may see.
    """

    def __init__(self, db: Database, thumbs_dir: Path, visibility: Visibility = EVERYONE) -> None:
        self.db = db
        self.thumbs_dir = thumbs_dir
        self.visibility = visibility

    def scoped(self, visibility: Visibility) -> Catalog:
        return Catalog(self.db, self.thumbs_dir, visibility)

    def thumb_path(self, rel: str | None) -> str | None:
        return str(self.thumbs_dir / rel) if rel else None

    def collection_id(self, name: str) -> int:
        """The id of a collection, created if new."""
        name = name.strip()
        if not name:
            raise LibraryError("a collection needs a name")
        name = self.visibility.stored_name(name)
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO collections(name, created) VALUES (?, ?)",
                (name, time.time()),
            )
            return conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0]

    def collections(self) -> list[CollectionInfo]:
        visible, args = self.visibility.sql()
        rows = (
            self.db.conn()
            .execute(
                f"""
            SELECT c.name,
                   SUM(m.kind = 'image' AND m.status = 'ok') AS images,
                   SUM(m.kind = 'video' AND m.status != 'failed') AS videos,
                   SUM(m.status = 'failed') AS failed,
                   SUM(CASE WHEN m.status = 'ok' THEN m.size ELSE 0 END) AS bytes
            FROM collections c LEFT JOIN media m ON m.collection_id = c.id
            WHERE 1=1 {visible}
            GROUP BY c.id ORDER BY c.name
            """,
                args,
            )
            .fetchall()
        )
        return [
            CollectionInfo(
                self.visibility.shown_name(r["name"]),
                r["images"] or 0,
                r["videos"] or 0,
                r["failed"] or 0,
                r["bytes"] or 0,
            )
            for r in rows
        ]

    def media(
        self,
        *,
        collection: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        url: str | None = None,
    ) -> list[MediaRecord]:
        """Media rows, newest first; `url` keeps those fetched from that web link."""
        visible, args = self.visibility.sql()
        query = f"SELECT m.*, c.name AS collection FROM media m JOIN collections c ON c.id = m.collection_id WHERE 1=1{visible}"
        if collection is not None:
            names = self.visibility.stored_names([collection])
            query += f" AND c.name IN ({','.join('?' * len(names))})"
            args += names
        if status is not None:
            query += " AND m.status = ?"
            args.append(status)
        if url is not None:
            query += " AND m.url = ?"
            args.append(url)
        query += " ORDER BY m.added DESC, m.id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [self._record(r) for r in self.db.conn().execute(query, args).fetchall()]

    def _record(self, r: sqlite3.Row) -> MediaRecord:
        return MediaRecord(
            id=r["id"],
            collection=self.visibility.shown_name(r["collection"]),
            path=r["path"],
            name=r["name"],
            kind=r["kind"],
            status=r["status"],
            error=r["error"],
            sha256=r["sha256"],
            size_bytes=r["size"],
            width=r["width"],
            height=r["height"],
            thumbnail=self.thumb_path(r["thumb"]),
            duration=r["duration"],
            fps=r["fps"],
            note=r["note"],
            url=r["url"],
        )

    def failed_files(self, collection: str | None = None) -> list[MediaRecord]:
        return self.media(collection=collection, status="failed")

    def counts(self, model_key: str | None = None) -> dict[str, int]:
        conn = self.db.conn()
        visible, args = self.visibility.sql()
        media = f"FROM media m JOIN collections c ON c.id = m.collection_id WHERE 1=1{visible}"
        queries = {
            "collections": f"SELECT COUNT(*) FROM collections c WHERE 1=1{visible}",
            "images": f"SELECT COUNT(*) {media} AND m.kind='image' AND m.status='ok'",
            "videos": f"SELECT COUNT(*) {media} AND m.kind='video' AND m.status!='failed'",
            "failed": f"SELECT COUNT(*) {media} AND m.status='failed'",
        }
        out = {name: conn.execute(sql, args).fetchone()[0] for name, sql in queries.items()}
        if model_key is not None:
            out["embeddings"] = conn.execute(
                "SELECT COUNT(*) FROM embeddings e JOIN media m ON m.id = e.media_id "
                f"JOIN collections c ON c.id = m.collection_id WHERE e.model_key = ?{visible}",
                [model_key, *args],
            ).fetchone()[0]
        return out

    def model_keys(self) -> dict[str, int]:
        """Embeddings per model key (over the whole library: what the index files hold)."""
        rows = (
            self.db.conn()
            .execute("SELECT model_key, COUNT(*) FROM embeddings GROUP BY model_key")
            .fetchall()
        )
        return {r[0]: r[1] for r in rows}

    def media_visible(self, media_id: int) -> bool:
        """Whether a media row exists and this catalog's user may see it."""
        visible, args = self.visibility.sql()
        row = (
            self.db.conn()
            .execute(
                "SELECT 1 FROM media m JOIN collections c ON c.id = m.collection_id "
                f"WHERE m.id = ?{visible}",
                [media_id, *args],
            )
            .fetchone()
        )
        return row is not None

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
            self.db.conn()
            .execute("SELECT COUNT(*) FROM frames WHERE media_id = ?", (media_id,))
            .fetchone()[0]
        )

    def frames_of(self, media_id: int) -> list[tuple[int, float, str]]:
        """(frame id, timestamp, image path) of a video's stored frames, in time order."""
        if not self.media_visible(media_id):
            return []
        rows = (
            self.db.conn()
            .execute(
                "SELECT id, timestamp, thumb FROM frames WHERE media_id = ? ORDER BY timestamp",
                (media_id,),
            )
            .fetchall()
        )
        return [(r[0], r[1], str(self.thumbs_dir / r[2])) for r in rows]
