"""list_link_items: the videos a link names, listed without downloading any of them.

A link to one video gives itself. A playlist, a channel or a page with several videos gives its
first items (at most `max_items`), each as (its own link, its title), read with yt-dlp's flat
extraction: the entries are listed, not extracted one by one, and nothing is downloaded. The
listing goes through the same guarded YoutubeDL as a download (fetch_video), so the same link
checks, connection guard, caps and Stop apply to every page it reads.
"""

from __future__ import annotations

import shutil
import urllib.parse
from typing import Any

from yt_dlp.utils import YoutubeDLError

from core.config import Settings
from core.errors import MediaError
from core.fetch.guard import _Abort, _Guard
from core.fetch.urls import _check_resolution, _normalize, _options
from core.fetch.ytdlp import _GuardedYDL, _Log, _short, _ydl_params, work_folder
from core.fetch.ytdlp import _title as _video_title
from core.jobs import Job, job_or_new

LISTING_STOPPED = "the listing was stopped before it finished; nothing was indexed from it"
_NESTED_DEPTH = 2  # a channel lists its tabs or playlists, which list videos: two levels at most


def list_link_items(
    url: str, settings: Settings, max_items: int | None = None, *, job: Job | None = None
) -> list[tuple[str, str]]:
    """(item link, title) of each video the link names: the link itself for a single video, the
    first `max_items` (default FRAMESCOPE_FETCH_MAX_ITEMS) of a playlist, channel or page with
    several videos. Nothing is downloaded.

    Raises MediaError (or AccessDenied) naming the link and the reason: a refused link (as
    fetch_video refuses it), a page that cannot be read, or one without any video. `job` may stop
    the listing (MediaError).
    """
    limit = int(max_items if max_items is not None else settings.fetch.max_items)
    if limit < 1:
        raise MediaError(url, "at least one item must be listed (FRAMESCOPE_FETCH_MAX_ITEMS)")
    opts = _options(settings)
    clean, host, port = _normalize(url, opts)
    job = job_or_new(job)
    _check_resolution(url, host, port, opts)  # before anything connects (checked again then)
    if job.stopped:
        raise MediaError(clean, LISTING_STOPPED)
    folder = opts.home / "downloads"
    work = work_folder(clean, folder, "list")  # yt-dlp's output folder: nothing lands in it
    guard = _Guard(opts, lambda: job.stopped)
    log = _Log()
    params = _ydl_params(opts, work, folder, log)
    params.update(
        noplaylist=False,  # a playlist is what is wanted here
        extract_flat="in_playlist",  # its entries as the page lists them, not each one extracted
        playlistend=limit,  # ... and only as many as will be taken
        skip_download=True,
    )
    job.report(0, None, "reading the page")
    try:
        with _GuardedYDL(params, guard) as ydl:
            info = ydl.extract_info(clean, download=False)
            guard.check()
            items = _items(ydl, info, clean, limit, guard, depth=0)
    except (_Abort, YoutubeDLError) as exc:
        raise MediaError(clean, _listing_reason(guard, exc)) from None
    except MediaError:
        raise
    except OSError as exc:
        if guard.reason:
            raise MediaError(clean, _listing_reason(guard, exc)) from None
        raise MediaError(clean, f"the page could not be read ({exc.strerror or exc})") from None
    finally:
        guard.close()
        shutil.rmtree(work, ignore_errors=True)
    if guard.reason:
        raise MediaError(clean, _listing_reason(guard, None))
    if not items:
        raise MediaError(clean, "no video was found at this link")
    job.report(1, 1, f"{len(items)} video(s) listed")
    return items


def _listing_reason(guard: _Guard, exc: BaseException | None) -> str:
    if guard.reason and guard.reason.startswith("the download was stopped"):
        return LISTING_STOPPED
    if guard.reason:
        return guard.reason
    return _short(exc) if exc is not None else "the page could not be read"


def _is_http(link: Any) -> bool:
    return isinstance(link, str) and link.lower().startswith(("http://", "https://"))


def _title(entry: dict, link: str) -> str:
    title = entry.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    name = urllib.parse.urlsplit(link).path.rstrip("/").rsplit("/", 1)[-1]
    return urllib.parse.unquote(name) or link


def _lists_videos(ie_key: Any) -> bool:
    """Whether an extractor returns playlists (a channel's tab, a playlist), never one video."""
    if not isinstance(ie_key, str) or not ie_key:
        return False
    try:
        from yt_dlp.extractor import get_info_extractor

        return get_info_extractor(ie_key)._RETURN_TYPE == "playlist"
    except Exception:  # an unknown key, or an extractor without tests: treated as a video
        return False


def _items(
    ydl: _GuardedYDL, info: Any, link: str, limit: int, guard: _Guard, depth: int
) -> list[tuple[str, str]]:
    """The (link, title) items of what yt-dlp gave for `link`, at most `limit` of them."""
    if not isinstance(info, dict):
        return []
    kind = info.get("_type") or "video"
    if kind not in ("playlist", "multi_video"):
        return [(link, _video_title(info, _title(info, link)))]  # one video: the link itself
    page = info.get("webpage_url") or link
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(found: list[tuple[str, str]]) -> None:
        for item_link, title in found:
            if item_link not in seen and len(out) < limit:
                seen.add(item_link)
                out.append((item_link, title))

    for entry in info.get("entries") or ():
        if len(out) >= limit:
            break
        guard.check()
        if not isinstance(entry, dict):
            continue
        entry_kind = entry.get("_type") or "video"
        if entry_kind in ("playlist", "multi_video"):
            if depth < _NESTED_DEPTH:
                add(_items(ydl, entry, page, limit - len(out), guard, depth + 1))
            continue
        if entry_kind in ("url", "url_transparent"):
            target = entry.get("url") if _is_http(entry.get("url")) else entry.get("webpage_url")
            if not _is_http(target):
                continue
            if _lists_videos(entry.get("ie_key")) and depth < _NESTED_DEPTH:
                nested = ydl.extract_info(target, download=False, ie_key=entry.get("ie_key"))
                guard.check()
                add(_items(ydl, nested, target, limit - len(out), guard, depth + 1))
                continue
            add([(target, _title(entry, target))])
            continue
        # A video the page itself describes: its own page if it has one, else its media file
        # (the <video> elements of a web page share the page's link).
        own = entry.get("webpage_url")
        target = own if _is_http(own) and own != page else entry.get("url")
        if _is_http(target):
            add([(target, _title(entry, target))])
    return out
