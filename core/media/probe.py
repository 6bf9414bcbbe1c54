"""Video probing: containers sniffed from their first bytes, opened safely, and described."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import av

from core.config import VideoLimits
from core.errors import MediaError
from core.format import format_duration, format_size

# Every video is sniffed from its first bytes before FFmpeg sees it, then opened with the one
# demuxer that matches (mov, avi or matroska). FFmpeg's format probing is never used, so a
# renamed playlist or a concat script cannot make it open other files or URLs.

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm"})
VIDEO_CONTAINERS = "MP4/MOV, AVI and MKV/WebM"

# Our short container names and the FFmpeg demuxer each one is opened with.
_DEMUXERS = {"mp4": "mov", "avi": "avi", "matroska": "matroska"}
# Top-level ISO BMFF boxes a MP4/MOV file can start with.
_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
# ftyp brands of still images stored in ISO BMFF (HEIF, AVIF, Canon raw).
_IMAGE_BRANDS = frozenset(
    {"heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1", "avif", "avis", "crx "}
)
_SNIFF_BYTES = 4096


@dataclass(frozen=True)
class VideoInfo:
    """What a video file is, read from its container (nothing is decoded)."""

    path: str
    container: str  # "mp4" (mov/mp4 family), "avi" or "matroska" (mkv/webm)
    codec: str  # e.g. "h264", "mpeg4", "vp9"
    width: int  # as stored; phone videos may be shown turned (sampled frames are upright)
    height: int
    fps: float
    duration: float  # seconds
    frames: int | None  # when the container says
    pixel_format: str | None
    has_audio: bool
    size_bytes: int
    audio_codec: str | None = None  # of the first audio stream
    brand: str | None = None  # the ftyp major brand (mp4) or EBML DocType (matroska)

    @property
    def browser_playable(self) -> bool:
        """Whether browsers play the file as it is: H.264/yuv420p in MP4, or VP8/VP9/AV1 in WebM."""
        if self.container == "mp4":
            return (
                self.codec == "h264"
                and self.pixel_format == "yuv420p"
                and self.brand != "qt  "  # QuickTime .mov: Firefox refuses it
                and self.audio_codec in (None, "aac", "mp3")
            )
        if self.container == "matroska":
            return (
                self.brand == "webm"
                and self.codec in ("vp8", "vp9", "av1")
                and self.audio_codec in (None, "opus", "vorbis")
            )
        return False


def _ebml_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer at `pos`, and the position after it."""
    if pos >= len(data) or data[pos] == 0:
        return None, len(data)
    length = 9 - data[pos].bit_length()
    raw = data[pos : pos + length]
    if len(raw) < length:
        return None, len(data)
    value = int.from_bytes(raw, "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, pos + length


def _ebml_doctype(head: bytes) -> str | None:
    """The DocType ("matroska" or "webm") from an EBML header, if it is in `head`."""
    size, pos = _ebml_vint(head, 4, keep_marker=False)
    end = min(len(head), pos + (size or 0))
    while pos < end:
        element, pos = _ebml_vint(head, pos, keep_marker=True)
        length, pos = _ebml_vint(head, pos, keep_marker=False)
        if element is None or length is None:
            return None
        if element == 0x4282:
            return head[pos : pos + length].rstrip(b"\0").decode("ascii", "replace")
        pos += length
    return None


def _describe_contents(head: bytes) -> str:
    """What a file that is not a supported video seems to be, in words."""
    known = [
        (b"#EXTM3U", "an HLS playlist (#EXTM3U)"),
        (b"ffconcat", "an FFmpeg concat script"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"\x89PNG", "a PNG image"),
        (b"GIF8", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"ID3", "an MP3 audio file"),
        (b"fLaC", "a FLAC audio file"),
        (b"OggS", "an Ogg file"),
        (b"FLV", "an FLV (Flash) video"),
        (b"\x00\x00\x01\xba", "an MPEG program stream (MPEG-PS/VOB)"),
        (b"\x30\x26\xb2\x75", "a Windows Media (ASF/WMV) file"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
    ]
    for magic, what in known:
        if head.startswith(magic):
            return what
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "a WAV audio file"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "an MPEG transport stream (.ts)"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MPEG audio (MP3 or AAC)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        if text.lstrip().startswith("<"):
            return "an XML or HTML document"
        return "a text file"
    return "unrecognised data"


def _sniff_container(label: str, head: bytes) -> tuple[str, str | None]:
    """Our container name and brand for the first bytes of a file, or MediaError."""
    if len(head) >= 8 and head[4:8] in _BMFF_BOXES:
        brand = head[8:12].decode("latin-1") if head[4:8] == b"ftyp" else None
        if brand in _IMAGE_BRANDS:
            raise MediaError(label, f"not a video: this is a HEIF/AVIF image (brand {brand!r})")
        return "mp4", brand
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi", None
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska", _ebml_doctype(head)
    raise MediaError(
        label,
        f"not a supported video: the contents are {_describe_contents(head)}; "
        f"supported containers are {VIDEO_CONTAINERS}",
    )


def _open_video_container(label: str, path: Path | str, container: str):
    """Open a sniffed file with its one demuxer; FFmpeg may read nothing but this file."""
    options = {"protocol_whitelist": "file"}
    if container == "mp4":
        options["enable_drefs"] = "0"  # never follow data references to other files
    try:
        # "file:" + an absolute path: no other protocol can be named by the file name
        return av.open(
            "file:" + os.path.abspath(path),
            format=_DEMUXERS[container],
            container_options=options,
            metadata_errors="replace",
        )
    except av.FFmpegError as exc:
        raise MediaError(
            label, f"not a readable {container} video: {exc.strerror or exc}"
        ) from None
    except Exception as exc:  # demuxers fail in many ways on hostile input
        raise MediaError(label, f"cannot open the video ({type(exc).__name__}: {exc})") from exc


def _video_stream(fmt) -> av.video.stream.VideoStream | None:
    """The first real video stream (cover art in audio files does not count)."""
    for stream in fmt.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _codec_name(stream) -> str:
    ctx = stream.codec_context
    if ctx is not None and ctx.codec is not None:
        return ctx.codec.canonical_name  # "av1", not the decoder's name ("libdav1d")
    return "unknown"


def probe_video(path: Path, limits: VideoLimits | None = None) -> VideoInfo:
    """Facts of a video file, or MediaError naming the file and what is wrong with it.

    `limits` default to the settings' defaults (`VideoLimits()`).
    """
    path = Path(path)
    limits = limits or VideoLimits()
    label = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError(label, "file not found") from None
    except OSError as exc:
        raise MediaError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise MediaError(label, "not a regular file")
    if st.st_size == 0:
        raise MediaError(label, "empty file (0 bytes)")
    if st.st_size > limits.max_bytes:
        raise MediaError(
            label,
            f"file is {format_size(st.st_size)}; the limit is {format_size(limits.max_bytes)}",
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except PermissionError:
        raise MediaError(label, "cannot read the file: permission denied") from None
    except OSError as exc:
        raise MediaError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    container, brand = _sniff_container(label, head)

    fmt = _open_video_container(label, path, container)
    try:
        stream = _video_stream(fmt)
        if stream is None:
            reason = "no video stream (audio only)" if fmt.streams.audio else "no video stream"
            raise MediaError(label, reason)
        ctx = stream.codec_context
        if ctx is None:
            raise MediaError(label, "no decoder for this video codec")
        codec = _codec_name(stream)
        width, height = ctx.width, ctx.height
        if width <= 0 or height <= 0:
            raise MediaError(label, f"the {codec} video stream has no frame size")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not fps > 0 or not math.isfinite(fps):
            raise MediaError(label, "the video stream states no frame rate")
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif fmt.duration:
            duration = fmt.duration / av.time_base
        frames = stream.frames or None
        if container == "avi" and frames:
            # The AVI header counts every frame; FFmpeg's duration only covers what it indexed,
            # which for a truncated file is the part still there.
            duration = max(duration, frames / fps)
        if not duration > 0 or not math.isfinite(duration):
            raise MediaError(label, "the container does not state the video's duration")
        if duration > limits.max_duration_s:
            raise MediaError(
                label,
                f"video is {format_duration(duration)} long; the limit is {format_duration(limits.max_duration_s)}",
            )
        if width * height > limits.max_pixels:
            raise MediaError(
                label,
                f"video is {width}x{height} = {width * height:,} pixels per frame, over the limit of {limits.max_pixels:,}",
            )
        audio = fmt.streams.audio[0] if fmt.streams.audio else None
        return VideoInfo(
            path=label,
            container=container,
            codec=codec,
            width=width,
            height=height,
            fps=fps,
            duration=duration,
            frames=frames,
            pixel_format=ctx.pix_fmt,
            has_audio=audio is not None,
            size_bytes=st.st_size,
            audio_codec=_codec_name(audio) if audio is not None else None,
            brand=brand,
        )
    except MediaError:
        raise
    except Exception as exc:  # av raises many types on hostile input; none may escape raw
        raise MediaError(label, f"cannot read the video ({type(exc).__name__}: {exc})") from exc
    finally:
        fmt.close()
