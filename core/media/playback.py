"""Browser playback: videos browsers cannot play are transcoded once to a cached H.264 MP4."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import subprocess
from pathlib import Path

from core.errors import MediaError
from core.media.probe import _DEMUXERS, VideoInfo, VideoLimits, probe_video

_TRANSCODE_VERSION = "1"  # part of cache names: bump when the ffmpeg settings below change
_HEAD_TAIL_BYTES = 1 << 20


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg  # only needed here; it looks for its binary on import

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def _h264_encoder(ffmpeg: str) -> str | None:
    """The H.264 encoder this ffmpeg binary has: libx264, else libopenh264, else None."""
    try:
        listing = subprocess.run(
            [ffmpeg, "-hide_banner", "-nostdin", "-encoders"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = {line.split()[1] for line in listing.splitlines() if len(line.split()) > 1}
    return next((name for name in ("libx264", "libopenh264") if name in names), None)


def _cache_key(path: Path) -> str:
    """Names a file's conversion: its size, mtime and its first and last megabyte."""
    st = path.stat()
    digest = hashlib.sha256(f"{_TRANSCODE_VERSION}:{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_HEAD_TAIL_BYTES))
        if st.st_size > 2 * _HEAD_TAIL_BYTES:
            fh.seek(-_HEAD_TAIL_BYTES, os.SEEK_END)
            digest.update(fh.read())
    return digest.hexdigest()[:32]


def transcode_for_browser(info: VideoInfo, cache_dir: Path) -> Path:
    """A file browsers can play: the video itself when it already is, else a cached H.264 MP4.

    The copy is H.264/yuv420p (longer side at most 1920) with AAC audio when the video has sound,
    and its index at the start (+faststart) so playback starts before the download ends. It is
    written under a temporary name and renamed, so a reader never sees a partial file, and named
    after the source's size, mtime and content so it is made once and reused.
    """
    source = Path(info.path)
    if info.browser_playable:
        return source
    label = info.path
    try:
        key = _cache_key(source)
    except OSError as exc:
        raise MediaError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{key}.mp4"
    if target.is_file() and target.stat().st_size > 0:
        return target
    ffmpeg = _ffmpeg_exe()
    encoder = _h264_encoder(ffmpeg)
    if encoder is None:
        raise MediaError(
            label, f"cannot convert for browser playback: {ffmpeg} has no H.264 encoder"
        )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MediaError(
            label, f"cannot create the video cache {cache_dir} ({exc.strerror or exc})"
        ) from exc
    tmp = cache_dir / f".{key}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    # Even dimensions (yuv420p needs them), the longer side at most 1920.
    scale = (
        "scale=w='if(gte(iw,ih),trunc(min(1920,iw)/2)*2,-2)'"
        ":h='if(gte(iw,ih),-2,trunc(min(1920,ih)/2)*2)'"
    )
    command = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file",
        "-f",
        _DEMUXERS[info.container],  # the sniffed demuxer, as for decoding: no probing
        "-i",
        "file:" + os.path.abspath(source),
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-vf",
        scale,
        "-c:v",
        encoder,
        *(["-preset", "veryfast", "-crf", "23"] if encoder == "libx264" else ["-b:v", "2M"]),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
        "-max_muxing_queue_size",
        "4096",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        "-y",
        str(tmp),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            detail = lines[-1] if lines else f"ffmpeg exited with status {result.returncode}"
            raise MediaError(label, f"cannot convert for browser playback: {detail[:300]}")
        try:
            made = probe_video(tmp, VideoLimits(max_duration_s=math.inf, max_bytes=1 << 62))
        except MediaError as exc:
            raise MediaError(
                label,
                f"cannot convert for browser playback: ffmpeg wrote an unreadable file ({exc.reason})",
            ) from None
        if made.codec != "h264" or made.pixel_format != "yuv420p":
            raise MediaError(
                label,
                f"cannot convert for browser playback: ffmpeg wrote {made.codec}/{made.pixel_format}",
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise MediaError(
            label, f"cannot convert for browser playback ({exc.strerror or exc})"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target
