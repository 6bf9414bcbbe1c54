"""fetch_video: one video downloaded by yt-dlp, whose network access all goes through the guard."""

from __future__ import annotations

import functools
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.downloader import get_suitable_downloader
from yt_dlp.downloader.dash import DashSegmentsFD
from yt_dlp.downloader.hls import HlsFD
from yt_dlp.downloader.http import HttpFD
from yt_dlp.utils import YoutubeDLError

from core.config import Settings
from core.errors import MediaError
from core.fetch.cache import _cached, _file_name, _remember, _url_lock, cache_key
from core.fetch.guard import STOPPED, _Abort, _Guard, _GuardedRH
from core.fetch.subtitles import _pick_subtitle_language, parse_vtt
from core.fetch.urls import (
    _check_resolution,
    _normalize,
    _Options,
    _options,
)
from core.fetch.video import FetchedVideo
from core.format import format_duration, format_size
from core.jobs import Job, job_or_new
from core.media import VideoLimits, probe_video

SUBTITLE_CAP = 20 * 1024 * 1024  # subtitle files are read up to this size


# =============================================================================================
# yt-dlp itself
# =============================================================================================

_NATIVE_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD)

# The first bytes of the files FFmpeg may be run on (merging and fixing downloads).
_MEDIA_MAGIC = (
    (4, (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"styp", b"sidx", b"moof")),
    (0, (b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"ID3", b"fLaC")),
)
# FFmpeg options for every input it reads: local files only, and only plain media demuxers
# (no playlists, concat scripts or SDP files that would name other files or URLs).
_FFMPEG_INPUT = [
    "-protocol_whitelist",
    "file",
    "-format_whitelist",
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mpegts,flv,ogg,mp3,aac,wav,flac",
]


def _looks_like_media(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) < 8:
        return False
    for offset, magics in _MEDIA_MAGIC:
        if any(head[offset:].startswith(m) for m in magics):
            return True
    if head[0] == 0x47:  # MPEG-TS sync byte (native HLS downloads)
        return True
    return head[0] == 0xFF and head[1] & 0xE0 == 0xE0  # MPEG audio / ADTS


class _GuardedYDL(yt_dlp.YoutubeDL):
    """YoutubeDL whose only network access is _GuardedRH and whose downloads are all native."""

    def __init__(self, params: dict, guard: _Guard) -> None:
        self._fetch_guard = guard
        super().__init__(params)

    @functools.cached_property
    def _request_director(self):  # replaces yt-dlp's list of handlers with ours
        director = self.build_request_director([_GuardedRH])
        for handler in director.handlers.values():
            handler.guard = self._fetch_guard
        return director

    def dl(self, name, info, subtitle=False, test=False):
        self._fetch_guard.check()
        downloader = get_suitable_downloader(info, self.params, to_stdout=(name == "-"))
        if name == "-" or downloader not in _NATIVE_DOWNLOADERS:
            protocol = info.get("protocol") or "unknown"
            raise _Abort(
                self._fetch_guard.fail(
                    f"this video needs a downloader ({getattr(downloader, '__name__', downloader)}, "
                    f"protocol {protocol}) that would bypass the network checks; it is not fetched"
                )
            )
        return super().dl(name, info, subtitle=subtitle, test=test)

    def post_process(self, filename, info, files_to_move=None):
        # FFmpeg runs next (merging, fixups): it only ever gets files that look like media.
        for path in info.get("__files_to_merge") or [filename]:
            if os.path.exists(path) and not _looks_like_media(Path(path)):
                raise _Abort(
                    self._fetch_guard.fail(
                        "the server sent something that is not a video file (a web page, playlist or script?)"
                    )
                )
        return super().post_process(filename, info, files_to_move)


class _Log:
    """yt-dlp's messages, kept for error reports instead of printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _keep(self, msg: str) -> None:
        if len(self.lines) < 500:
            self.lines.append(str(msg))

    debug = info = warning = error = _keep


def _short(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    text = re.sub(r"^(?:ERROR:\s*)+", "", text)
    text = re.sub(r"^\[[\w:]+\]\s*(?:[\w.-]+:\s*)?", "", text)
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.split(r" \(caused by |; please report this issue", first)[0]
    return first[:300]


def _title(info: dict, fallback: str) -> str:
    """The video's title; a page's only <video> is named after the page ("A page", not yt-dlp's
    "A page (1)", the number it gives each video it finds in a page)."""
    title = str(info.get("title") or fallback)
    if (
        str(info.get("extractor_key") or "").lower() == "html5mediaembed"
        and str(info.get("id") or "").endswith("-1")
        and title.endswith(" (1)")
        and not info.get("playlist_count")
    ):
        title = title[: -len(" (1)")] or title
    return title


def _format_selector(height: int) -> str:
    # the best up to the cap; when every format is taller, the smallest one
    return f"bv*[height<=?{height}]+ba/b[height<=?{height}]/wv*+ba/w"


# =============================================================================================
# fetch_video
# =============================================================================================


def _single_video(url: str, info: Any) -> dict:
    if not isinstance(info, dict):
        raise MediaError(url, "no video was found at this link")
    kind = info.get("_type", "video")
    if kind in ("playlist", "multi_video"):
        raise MediaError(
            url, "this link is a playlist or a page with several videos; give the link of one video"
        )
    if kind != "video":
        raise MediaError(
            url, f"no single video was found at this link (yt-dlp gave a {kind!r} result)"
        )
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise MediaError(url, "live streams cannot be fetched")
    return info


def _check_before_download(url: str, info: dict, opts: _Options) -> None:
    duration = info.get("duration")
    if isinstance(duration, (int, float)) and duration > opts.max_seconds:
        raise MediaError(
            url,
            f"the video is {format_duration(duration)} long; the limit is "
            f"{format_duration(opts.max_seconds)} (FRAMESCOPE_FETCH_MAX_MINUTES)",
        )
    formats = info.get("requested_formats") or [info]
    sizes = [f.get("filesize") or f.get("filesize_approx") for f in formats]
    if all(isinstance(s, (int, float)) for s in sizes) and sum(sizes) > opts.max_bytes:
        raise MediaError(
            url,
            f"the video is about {format_size(sum(sizes))}, over the "
            f"{format_size(opts.max_bytes)} cap (FRAMESCOPE_FETCH_MAX_MB)",
        )


def work_folder(link: str, folder: Path, kind: str) -> Path:
    """A fresh folder for yt-dlp's files under the downloads folder (`.part-...`, `.list-...`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = folder / f".{kind}-{uuid.uuid4().hex}"
        work.mkdir()
    except OSError as exc:
        raise MediaError(
            link, f"cannot create the download folder {folder}: {exc.strerror or exc}"
        ) from exc
    return work


def fetch_video(
    url: str,
    settings: Settings,
    *,
    job: Job | None = None,
) -> FetchedVideo:
    """Download one video from a web page or direct link into <home>/downloads.

    Refuses unsafe links (see check_url), playlists, live streams and videos over the duration
    or size caps; the size cap is enforced while downloading. A link fetched before is not
    downloaded again. `job` gets progress (bytes downloaded of the total, or of None when unknown)
    and may stop the download (MediaError, nothing kept).
    """
    opts = _options(settings)
    clean, host, port = _normalize(url, opts)
    job = job_or_new(job)
    report = job.report
    folder = opts.home / "downloads"
    with _url_lock(clean):
        hit = _cached(folder, clean)
        if hit is not None:
            cached = hit[0]
            size = cached.path.stat().st_size
            report(size, size, f"already downloaded: {cached.title}")
            return cached
        _check_resolution(url, host, port, opts)  # before anything connects (checked again then)
        if job.stopped:
            raise MediaError(clean, STOPPED)
        work = work_folder(clean, folder, "part")
        guard = _Guard(opts, lambda: job.stopped)
        try:
            return _download(clean, opts, guard, work, folder, report)
        finally:
            guard.close()
            shutil.rmtree(work, ignore_errors=True)


def _ydl_params(opts: _Options, work: Path, folder: Path, log: _Log) -> dict:
    """yt-dlp's options for one fetch into the folder `work` (hooks are added by the caller)."""
    import imageio_ffmpeg

    return {
        "logger": log,
        "quiet": True,
        "noprogress": True,
        "no_color": True,
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist is refused: its entries are not extracted
        "playlistend": 2,  # ... and not listed further than needed to see it is one
        "format": _format_selector(opts.max_height),
        "merge_output_format": "mp4/webm/mkv",
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
        "paths": {"home": str(work), "temp": str(work)},
        "outtmpl": {"default": "media.%(ext)s"},
        "socket_timeout": opts.timeout,
        "retries": 2,
        "fragment_retries": 2,
        "extractor_retries": 1,
        "file_access_retries": 1,
        "max_filesize": opts.max_bytes,
        "proxy": "",  # never a proxy from the environment: the handler refuses proxies anyway
        "external_downloader": {"default": "native"},
        "external_downloader_args": {"ffmpeg_i": list(_FFMPEG_INPUT)},
        "postprocessor_args": {
            f"{pp}+ffmpeg_i": list(_FFMPEG_INPUT)
            for pp in (
                "merger",
                "fixupm3u8",
                "fixupm4a",
                "fixuptimestamp",
                "fixupduration",
                "fixupduplicatemoov",
                "fixupstretched",
            )
        },
        "hls_prefer_native": True,
        "concurrent_fragment_downloads": 1,
        "enable_file_urls": False,
        "remote_components": [],  # yt-dlp fetches no helper scripts of its own
        "allow_unplayable_formats": False,
        "writesubtitles": False,
        "writeautomaticsub": False,
        "subtitlesformat": "vtt",
        "writethumbnail": False,
        "writeinfojson": False,
        "updatetime": False,
        "geo_bypass": False,
        "cachedir": str(folder / ".cache"),
        "overwrites": True,
        "check_formats": False,
    }


def _download(
    url: str,
    opts: _Options,
    guard: _Guard,
    work: Path,
    folder: Path,
    report: Callable[[float, float | None, str], None],
) -> FetchedVideo:
    log = _Log()
    files: dict[str, list[int | None]] = {}  # download file -> [bytes so far, total if known]
    state = {"title": "video"}

    def on_progress(d: dict) -> None:
        guard.check()
        name = str(d.get("filename") or d.get("tmpfilename") or "")
        status = d.get("status")
        done = d.get("downloaded_bytes") or 0
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        if status not in ("downloading", "finished"):
            return
        files[name] = [int(done), int(total) if total else None]
        received = sum(v[0] or 0 for v in files.values())
        if received > opts.max_bytes:
            raise _Abort(
                guard.fail(
                    f"the download passed the {format_size(opts.max_bytes)} cap "
                    f"(FRAMESCOPE_FETCH_MAX_MB) and was stopped; the partial file was removed"
                )
            )
        if status == "downloading" and d.get("total_bytes") and d["total_bytes"] > opts.max_bytes:
            raise _Abort(
                guard.fail(
                    f"the file is {format_size(d['total_bytes'])}, over the "
                    f"{format_size(opts.max_bytes)} cap (FRAMESCOPE_FETCH_MAX_MB)"
                )
            )
        totals = [v[1] for v in files.values()]
        whole = sum(totals) if all(totals) else None
        report(received, whole, f"downloading {state['title']}: {format_size(received)}")

    def on_postprocess(d: dict) -> None:
        guard.check()
        if d.get("status") == "started":
            report(
                sum(v[0] or 0 for v in files.values()),
                None,
                f"processing the download ({d.get('postprocessor')})",
            )

    params = _ydl_params(opts, work, folder, log)
    params["progress_hooks"] = [on_progress]
    params["postprocessor_hooks"] = [on_postprocess]

    try:
        with _GuardedYDL(params, guard) as ydl:
            report(0, None, "reading the page")
            info = _single_video(url, ydl.extract_info(url, download=False))
            guard.check()
            _check_before_download(url, info, opts)
            state["title"] = str(info.get("title") or "video")
            key = cache_key(info)
            if key:
                hit = _cached(folder, url, key)
                if hit is not None:
                    _remember(folder, hit[0], key, hit[1])
                    return hit[0]
            language = _pick_subtitle_language(info)
            if language:
                ydl.params["writesubtitles"] = True
                ydl.params["writeautomaticsub"] = True
                ydl.params["subtitleslangs"] = [re.escape(language)]
            result = ydl.process_ie_result(info, download=True)
            guard.check()
            if not isinstance(result, dict):
                result = info
    except (_Abort, YoutubeDLError) as exc:
        if guard.reason:
            raise MediaError(url, guard.reason) from None
        raise MediaError(url, _short(exc)) from None
    except MediaError:
        raise
    except OSError as exc:
        if guard.reason:
            raise MediaError(url, guard.reason) from None
        raise MediaError(url, f"the download failed ({exc.strerror or exc})") from None
    if guard.reason:
        raise MediaError(url, guard.reason)

    video = _downloaded_file(result, work)
    if video is None:
        said = next((line for line in log.lines if "max-filesize" in line), None)
        if said:
            raise MediaError(
                url,
                f"the server says the file is over the {format_size(opts.max_bytes)} cap (FRAMESCOPE_FETCH_MAX_MB)",
            )
        errors = [line for line in log.lines if "ERROR" in line or "error" in line.lower()]
        reason = _short(Exception(errors[-1])) if errors else "yt-dlp finished without a video file"
        raise MediaError(url, f"the download failed: {reason}")
    report(video.stat().st_size, video.stat().st_size, "checking the video")
    limits = VideoLimits(
        max_duration_s=opts.max_seconds, max_pixels=opts.max_pixels, max_bytes=opts.max_bytes
    )
    try:
        probed = probe_video(video, limits)
    except MediaError as exc:
        raise MediaError(url, f"the downloaded file is not a usable video: {exc.reason}") from None

    cues: tuple[tuple[float, float, str], ...] = ()
    for sub in sorted(work.glob("*.vtt")):
        try:
            with open(sub, encoding="utf-8", errors="replace") as fh:
                cues = parse_vtt(fh.read(SUBTITLE_CAP))
        except OSError:
            cues = ()
        if cues:
            break
    chapters = []
    for chapter in result.get("chapters") or info.get("chapters") or ():
        if isinstance(chapter, dict) and isinstance(chapter.get("start_time"), (int, float)):
            chapters.append(
                {
                    "start": float(chapter["start_time"]),
                    "end": float(chapter.get("end_time") or probed.duration),
                    "title": str(chapter.get("title") or ""),
                }
            )
    duration = info.get("duration")
    final = folder / _file_name(info, url, video.suffix.lstrip(".").lower())
    try:
        os.replace(video, final)
    except OSError as exc:
        raise MediaError(url, f"cannot keep the downloaded file: {exc.strerror or exc}") from exc
    uploader = info.get("uploader") or info.get("channel")
    fetched = FetchedVideo(
        url=url,
        path=final,
        title=_title(info, final.stem),
        uploader=str(uploader) if uploader else None,
        duration=float(duration)
        if isinstance(duration, (int, float)) and duration > 0
        else probed.duration,
        chapters=tuple(chapters),
        subtitles="\n".join(text for _, _, text in cues) if cues else None,
        cues=cues,
        extractor=str(info.get("extractor_key") or info.get("extractor") or ""),
    )
    _remember(folder, fetched, key)
    report(final.stat().st_size, final.stat().st_size, f"downloaded {fetched.title}")
    return fetched


def _downloaded_file(result: Any, work: Path) -> Path | None:
    if isinstance(result, dict):
        for item in result.get("requested_downloads") or []:
            path = item.get("filepath") if isinstance(item, dict) else None
            if path and Path(path).is_file() and Path(path).resolve().parent == work.resolve():
                return Path(path)
    candidates = [
        p
        for p in work.iterdir()
        if p.is_file()
        and p.suffix.lower() not in (".vtt", ".srt", ".part", ".ytdl", ".json")
        and not p.name.startswith(".")
        and ".part" not in p.suffixes
        and _looks_like_media(p)
    ]
    return max(candidates, key=lambda p: p.stat().st_size) if candidates else None
