"""The download index (<home>/downloads/index.json): links fetched before and their files.

Entries are keyed by the normalised link. A second key, "<extractor>:<id>", lets another link to
the same video (a short link, a link with extra query parameters) find it, but only when the
extractor's id names the video on its site: the generic extractor's id is just the last part of
the link's path, the same for http://a.example/video.mp4 and http://b.example/video.mp4, so it is
never used as a key. Each entry records the file's size and SHA-256 when it was downloaded; a file
that no longer matches (changed, replaced or cut short on disk) is not served, and is fetched again.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

from core.fetch.video import FetchedVideo
from core.files import write_atomic
from core.media import file_sha256

INDEX_NAME = "index.json"
# Extractors whose "id" is made from the link itself (its file name), not the site's id of a video:
# yt-dlp's generic extractor and those it runs on a page (embedded <video>, quoted HTML, Camtasia),
# and the RTMP/MMS ones.
_GENERIC_EXTRACTORS = frozenset(
    {"generic", "html5mediaembed", "quotedhtml", "camtasiaembed", "rtmp", "mms", "viewsource"}
)


def cache_key(info: dict) -> str | None:
    """The "<extractor>:<id>" key of a video yt-dlp described, or None when the id is not one the
    site gave (the generic extractor, which names a video after the link's file name)."""
    extractor, video_id = info.get("extractor_key"), info.get("id")
    if not extractor or not video_id or str(extractor).lower() in _GENERIC_EXTRACTORS:
        return None
    return f"{extractor}:{video_id}"


# =============================================================================================
# The download index
# =============================================================================================

_INDEX_LOCK = threading.Lock()
_URL_LOCKS: dict[str, threading.Lock] = {}
_URL_LOCKS_GUARD = threading.Lock()


def _url_lock(url: str) -> threading.Lock:
    with _URL_LOCKS_GUARD:
        return _URL_LOCKS.setdefault(url, threading.Lock())


def _read_index(folder: Path) -> dict:
    try:
        data = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": 1, "items": {}, "ids": {}}
    if not isinstance(data, dict) or not isinstance(data.get("items"), dict):
        return {"version": 1, "items": {}, "ids": {}}
    data.setdefault("ids", {})
    return data


def _from_entry(url: str, entry: dict, folder: Path) -> FetchedVideo | None:
    """The video of an entry, if its file is still the one downloaded (same size and SHA-256)."""
    try:
        name = str(entry["file"])
        if Path(name).name != name or name.startswith("."):
            return None
        path = folder / name
        if not path.is_file() or path.stat().st_size != int(entry.get("size", -1)):
            return None
        recorded = entry.get("sha256")
        if not isinstance(recorded, str) or file_sha256(path) != recorded:
            return None  # changed on disk, or recorded before hashes were kept: fetched again
        return FetchedVideo(
            url=url,
            path=path,
            title=str(entry.get("title") or path.stem),
            uploader=entry.get("uploader"),
            duration=entry.get("duration"),
            chapters=tuple(dict(c) for c in entry.get("chapters") or ()),
            subtitles=entry.get("subtitles"),
            cues=tuple((float(s), float(e), str(t)) for s, e, t in entry.get("cues") or ()),
            extractor=str(entry.get("extractor") or ""),
        )
    except (KeyError, TypeError, ValueError, OSError):
        return None


def _cached(folder: Path, url: str, key: str | None = None) -> tuple[FetchedVideo, str] | None:
    """(the video, its file's SHA-256) downloaded before from this link, or for this key (see
    cache_key), when its file is still the one downloaded; else None."""
    with _INDEX_LOCK:
        index = _read_index(folder)
    entry = index["items"].get(url)
    if (
        entry is None
        and key is not None
        and key.split(":", 1)[0].lower() not in _GENERIC_EXTRACTORS
    ):
        original = index["ids"].get(key)
        entry = index["items"].get(original) if original else None
        if isinstance(entry, dict) and entry.get("key") != key:
            entry = None
    if not isinstance(entry, dict):
        return None
    video = _from_entry(url, entry, folder)
    return (video, str(entry["sha256"])) if video is not None else None


def _remember(
    folder: Path, video: FetchedVideo, key: str | None, sha256: str | None = None
) -> None:
    """Record a downloaded video under its link (and key); `sha256` of its file when known."""
    entry = {
        "file": video.path.name,
        "size": video.path.stat().st_size,
        "sha256": sha256 or file_sha256(video.path),
        "title": video.title,
        "uploader": video.uploader,
        "duration": video.duration,
        "chapters": list(video.chapters),
        "subtitles": video.subtitles,
        "cues": [list(c) for c in video.cues],
        "extractor": video.extractor,
        "key": key,
        "fetched": time.time(),
    }
    with _INDEX_LOCK:
        index = _read_index(folder)
        index["items"][video.url] = entry
        if key:
            index["ids"][key] = video.url
        write_atomic(
            folder / INDEX_NAME, json.dumps(index, ensure_ascii=False, indent=1).encode("utf-8")
        )


def _file_name(info: dict, url: str, ext: str) -> str:
    def slug(value: Any, limit: int) -> str:
        text = unicodedata.normalize("NFKD", str(value or "")).encode("ascii", "ignore").decode()
        return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:limit] or "video"

    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:10]
    ext = ext if re.fullmatch(r"[a-z0-9]{1,5}", ext or "") else "mp4"
    return f"{slug(info.get('extractor_key'), 20)}-{slug(info.get('id'), 60)}-{digest}.{ext}"
