"""The download index (<home>/downloads/index.json): links fetched before and their files."""

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

INDEX_NAME = "index.json"


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
    try:
        name = str(entry["file"])
        if Path(name).name != name or name.startswith("."):
            return None
        path = folder / name
        if not path.is_file() or path.stat().st_size != int(entry.get("size", -1)):
            return None
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


def _cached(folder: Path, url: str, key: str | None = None) -> FetchedVideo | None:
    with _INDEX_LOCK:
        index = _read_index(folder)
    entry = index["items"].get(url)
    if entry is None and key is not None:
        original = index["ids"].get(key)
        entry = index["items"].get(original) if original else None
    return _from_entry(url, entry, folder) if isinstance(entry, dict) else None


def _remember(folder: Path, video: FetchedVideo, key: str | None) -> None:
    entry = {
        "file": video.path.name,
        "size": video.path.stat().st_size,
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
