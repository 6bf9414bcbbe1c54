"""Safe media loading: images and videos are checked (size, pixels, format, integrity) before use."""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import stat
import subprocess
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import ConfigError, MediaError

# Pillow format names accepted, and how users know them.
IMAGE_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "BMP": "BMP",
    "TIFF": "TIFF",
    "GIF": "GIF",
}
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
# Extensions of image formats we recognise but do not read: such files are reported, not ignored.
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset(
    {
        ".heic",
        ".heif",
        ".avif",
        ".jxl",
        ".svg",
        ".psd",
        ".ico",
        ".cr2",
        ".nef",
        ".arw",
        ".dng",
        ".raw",
        ".ppm",
        ".pgm",
        ".tga",
        ".jp2",
    }
)
SUPPORTED_LIST = "JPEG, PNG, WebP, BMP, TIFF, GIF"
THUMBNAIL_SIZE = 256

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a half-grey image
# load_image checks the declared pixel count against the configured limit before decoding, so
# Pillow's own fixed limit would only hide that check's clearer message.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class LoadedImage:
    """A decoded RGB image with the facts of its file."""

    image: (
        Image.Image
    )  # RGB; may be decoded at reduced scale (JPEG draft) when a size hint is given
    width: int  # of the full image, after EXIF orientation
    height: int
    format: str


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _describe_size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def load_image(
    source: Path | bytes,
    *,
    name: str | None = None,
    max_bytes: int = 50 * 1024 * 1024,
    max_pixels: int = 100_000_000,
    min_side: int | None = None,
) -> LoadedImage:
    """Decode an image file or upload to RGB, or raise MediaError naming the file and the reason.

    Args:
        source: a file path, or the bytes of an upload.
        name: how to name the file in messages (defaults to the path).
        max_bytes: larger files are refused before reading.
        max_pixels: images declaring more pixels are refused before decoding (decompression bombs).
        min_side: when given, the image returned may be smaller, its shorter side still at least
            this many pixels (enough for thumbnails and model inputs): JPEGs are decoded at a reduced
            scale (much faster), other formats reduced by an integer factor after decoding (much
            less memory held per image). `width` and `height` stay the file's.
    """
    label = name or (str(source) if isinstance(source, Path) else "upload")
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
        except FileNotFoundError:
            raise MediaError(label, "file not found") from None
        except OSError as exc:
            raise MediaError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    else:
        size = len(source)
    if size == 0:
        raise MediaError(label, "empty file (0 bytes)")
    if size > max_bytes:
        raise MediaError(
            label, f"file is {_describe_size(size)}; the limit is {_describe_size(max_bytes)}"
        )

    try:
        if isinstance(source, Path):
            with open(source, "rb") as fh:
                data = fh.read()
        else:
            data = source
    except PermissionError:
        raise MediaError(label, "cannot read the file: permission denied") from None
    except OSError as exc:
        raise MediaError(label, f"cannot read the file ({exc.strerror or exc})") from exc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise MediaError(
                label, f"not a readable image: the contents are not {SUPPORTED_LIST} data"
            ) from None
        except OSError as exc:
            raise MediaError(label, f"corrupt image header ({exc})") from exc

        fmt = img.format or "unknown"
        if fmt not in IMAGE_FORMATS:
            raise MediaError(label, f"unsupported image format {fmt}; supported: {SUPPORTED_LIST}")
        width, height = img.size
        if width * height > max_pixels:
            raise MediaError(
                label,
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} (possible decompression bomb)",
            )
        if width == 0 or height == 0:
            raise MediaError(label, "image has no pixels (0 width or height)")
        try:
            if fmt in ("JPEG", "MPO") and min_side:
                scale = min(width, height) / min_side
                if scale >= 2:
                    img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
            img.seek(0)  # GIF, TIFF: the first frame
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise MediaError(label, f"truncated or corrupt image data ({exc})") from exc
        except (
            Exception
        ) as exc:  # decoders fail in many ways on hostile input; none may stop a batch
            raise MediaError(
                label, f"cannot decode the image ({type(exc).__name__}: {exc})"
            ) from exc

    try:
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated a quarter turn
            width, height = height, width
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not make the pixels unusable
        pass
    rgb = _to_rgb(img)
    if min_side and min(rgb.size) >= 2 * min_side:
        rgb = rgb.reduce(min(rgb.size) // min_side)
    return LoadedImage(image=rgb, width=width, height=height, format=IMAGE_FORMATS[fmt])


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def make_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG thumbnail whose longer side is at most `size` pixels."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=85)
    return out.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# =============================================================================================
# Video: probing, frame sampling and browser playback
# =============================================================================================
#
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

# Frame sampling tuning (see FrameSampler).
SCENE_THRESHOLD = 20.0  # mean HSV change (0-255 scale) between analysed frames that marks a cut
SCENE_RATIO = 3.0  # ... and it must also be this many times the recent mean (fast motion is no cut)
SCENE_MIN_LENGTH_S = 0.6  # cuts closer than this to the previous one are ignored (flashes)
SCENE_PICK_DELAY_S = 0.3  # the frame kept for a scene is this far after its cut
SEEK_MIN_GAP_S = 2.0  # "auto" seeks only when that skips at least this much video
STRATEGIES = ("auto", "sequential", "nonref", "seek")
_FEATURE_WIDTH = 64  # scene detection works on frames scaled to this width


@dataclass(frozen=True)
class VideoLimits:
    """Videos over any of these are refused before decoding."""

    max_duration_s: float = 4 * 3600
    max_pixels: int = 3840 * 2160  # width*height of a frame
    max_bytes: int = 20 * 1024**3


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


def _describe_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


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


def probe_video(path: Path, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Facts of a video file, or MediaError naming the file and what is wrong with it."""
    path = Path(path)
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
            f"file is {_describe_size(st.st_size)}; the limit is {_describe_size(limits.max_bytes)}",
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
                f"video is {_describe_duration(duration)} long; the limit is {_describe_duration(limits.max_duration_s)}",
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


@dataclass(frozen=True)
class SampledFrame:
    """One sampled video frame."""

    timestamp: float  # seconds from the start (presentation time)
    image: Image.Image  # RGB, upright, longer side at most the sampler's `max_side` (aspect kept)
    scene_start: float | None = None  # scene mode: when the frame's scene starts (its cut)


class _Clock:
    """Presentation times of decoded frames in seconds, even where a file's PTS are wrong.

    Some files label frames with decode-order times (box.mp4: B-frames without a ctts box; AVIs
    with packed B-frames), so the decoder hands out frames in display order with PTS that jump
    back and forth. As FFmpeg's best-effort timestamp does, PTS are trusted until they have gone
    backwards more often than the DTS; then the DTS are used. A frame's DTS is that of the packet
    whose decoding released it, so it is only right when every frame is decoded: `uses_dts` tells
    the sampler not to skip or seek in such files.
    """

    def __init__(self, stream, origin: float, frame_duration: float) -> None:
        self.time_base = stream.time_base or Fraction(1, 1)
        self.origin = origin
        self.frame_duration = frame_duration
        self.pts_faults = self.dts_faults = 0
        self.reset()

    @property
    def uses_dts(self) -> bool:
        return self.pts_faults > self.dts_faults

    def reset(self) -> None:
        """Forget the previous frame (after a seek)."""
        self.last_pts: int | None = None
        self.last_dts: int | None = None
        self.last: float | None = None

    def __call__(self, frame) -> float:
        pts, dts = frame.pts, frame.dts
        if dts is not None:
            if self.last_dts is not None and dts <= self.last_dts:
                self.dts_faults += 1
            self.last_dts = dts
        if pts is not None:
            if self.last_pts is not None and pts <= self.last_pts:
                self.pts_faults += 1
            self.last_pts = pts
        if pts is not None and (dts is None or self.pts_faults <= self.dts_faults):
            value: int | None = pts
        else:
            value = dts
        if value is None:
            seconds = 0.0 if self.last is None else self.last + self.frame_duration
        else:
            seconds = float(value * self.time_base) - self.origin
        if self.last is not None and seconds <= self.last:  # time only moves forward
            seconds = self.last + self.frame_duration
        self.last = seconds
        return seconds


class FrameSampler:
    """Streams sampled frames of a probed video; memory stays flat however long the video is.

    Time mode yields, for each target 0, every, 2*every, ... before the end, the first frame whose
    presentation time is at or after it. With `max_frames`, when the video would need more frames
    than that, the interval is widened to spread `max_frames` frames evenly over the whole video.

    Scene mode detects shot cuts and yields one frame per scene, SCENE_PICK_DELAY_S after its cut
    (clear of the blur of the cut; scenes are at least SCENE_MIN_LENGTH_S long). A cut is where the
    mean absolute change of the frame, scaled down and in HSV (hue compared around the circle), is
    at least `scene_threshold` (0-255 scale) and SCENE_RATIO times the mean change of the
    preceding second (so fast motion or a pan is not a cut). Non-reference frames are skipped
    when decoding (cut times may be a frame or two late). With `max_frames`, cuts closer than
    duration / max_frames to the previous one are ignored, so the scenes still cover the whole
    video, and no more than `max_frames` frames are yielded.

    Decoding strategy (`strategy`, default "auto", chosen by bench/bench_video_decode.py):
    threaded decoding, where non-reference frames (most B-frames) are skipped while they come
    before the next target, and the demuxer seeks to the keyframe before the next target when
    that keyframe is at least SEEK_MIN_GAP_S ahead (sparse sampling). It yields the same frames
    as decoding everything. Files whose PTS cannot be trusted (see _Clock; checked on
    the first 30 frames) are decoded frame by frame instead. "sequential", "nonref" (always skip
    non-reference frames: a yielded frame may be a few frames late) and "seek" (seek before every
    target) exist to be measured.

    After iteration, `truncated` is None or says why decoding stopped before the end (the frames
    yielded until then are good). `planned` is how many frames time mode will yield; in scene mode
    it starts as an upper bound and is re-estimated from the scenes found so far after each one
    (exact at the end). `progress` (0-1) is how much of the video is decoded. Iterating again
    starts over. An unreadable file raises MediaError from the iteration.
    """

    def __init__(
        self,
        info: VideoInfo,
        *,
        every: float = 1.0,
        max_frames: int | None = None,
        scenes: bool = False,
        scene_threshold: float = SCENE_THRESHOLD,
        max_side: int = 448,
        strategy: str = "auto",
    ) -> None:
        if not (isinstance(every, int | float) and math.isfinite(every) and every > 0):
            raise ConfigError(
                f"the sampling interval must be a positive number of seconds, not {every!r}"
            )
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise ConfigError(
                f"max_frames must be a whole number of at least 1, not {max_frames!r}"
            )
        if not (math.isfinite(scene_threshold) and scene_threshold > 0):
            raise ConfigError(f"scene_threshold must be a positive number, not {scene_threshold!r}")
        if not (isinstance(max_side, int) and max_side >= 16):
            raise ConfigError(f"max_side must be a whole number of at least 16, not {max_side!r}")
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown decoding strategy {strategy!r}; one of {', '.join(STRATEGIES)}"
            )
        self.info = info
        self.max_frames = max_frames
        self.scenes = scenes
        self.scene_threshold = float(scene_threshold)
        self.max_side = max_side
        self.strategy = strategy
        self.truncated: str | None = None
        self.progress = 0.0
        self.frame_duration = 1.0 / info.fps
        if scenes:
            self.interval = every
            self.scene_spacing = max(
                SCENE_MIN_LENGTH_S, info.duration / max_frames if max_frames else 0.0
            )
            bound = math.floor(info.duration / self.scene_spacing) + 1
            self._scene_bound = min(bound, max_frames) if max_frames else bound
            self.planned = self._scene_bound
        else:
            # targets k*every strictly before the end: floor(duration/every) + 1 of them
            count = math.floor(info.duration / every - 1e-9) + 1
            if max_frames is not None and count > max_frames:
                every = info.duration / max_frames
                count = max_frames
            self.interval = every
            self.planned = max(count, 1)

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[SampledFrame]:
        self.truncated = None
        self.progress = 0.0
        label = self.info.path
        fmt = _open_video_container(label, self.info.path, self.info.container)
        try:
            stream = _video_stream(fmt)
            if stream is None or stream.codec_context is None:
                raise MediaError(label, "no decodable video stream")
            for other in fmt.streams:
                if other is not stream:  # the demuxer need not even read them
                    other.discard = av.stream.Discard.all
            stream.thread_type = "AUTO"  # frame and slice threads
            origin = fmt.start_time / av.time_base if fmt.start_time is not None else 0.0
            clock = _Clock(stream, origin, self.frame_duration)
            if self.scenes:
                yield from self._by_scene(fmt, stream, clock)
            else:
                yield from self._by_time(fmt, stream, clock)
            self.progress = 1.0
        finally:
            fmt.close()

    def _image(self, frame) -> Image.Image:
        """The frame as an upright RGB image, scaled down by FFmpeg while converting."""
        ctx_sar = self._sar
        width, height = frame.width, frame.height
        shown_width = width * ctx_sar
        scale = min(1.0, self.max_side / max(shown_width, height))
        out_w = max(1, round(shown_width * scale))
        out_h = max(1, round(height * scale))
        image = frame.reformat(
            width=out_w, height=out_h, format="rgb24", interpolation="AREA"
        ).to_image()
        turn = {
            90: Image.Transpose.ROTATE_90,
            180: Image.Transpose.ROTATE_180,
            270: Image.Transpose.ROTATE_270,
        }.get(round(frame.rotation) % 360)
        return image.transpose(turn) if turn is not None else image

    def _start(self, stream) -> None:
        sar = stream.codec_context.sample_aspect_ratio
        self._sar = float(sar) if sar and sar > 0 else 1.0

    def _packets(self, fmt, stream, state: dict) -> Iterator:
        """Demuxed packets; a demuxer error ends them and is kept in `state`."""
        packets = fmt.demux(stream)
        try:
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except Exception as exc:  # the file ends mid-packet, or is corrupt
                    state["error"] = exc
                    state["eof"] = True
                    return
                yield packet
        finally:
            packets.close()

    def _decode(self, packet, state: dict) -> list:
        """A packet's frames; a packet that fails to decode is skipped, as players do."""
        try:
            return packet.decode()
        except Exception as exc:
            state["error"] = exc
            state["decode_errors"] = state.get("decode_errors", 0) + 1
            return []

    def _finish(self, state: dict, last: float | None) -> None:
        """Set `truncated` when decoding ended well before the container's duration."""
        duration = self.info.duration
        error = state.get("error")
        if last is None:
            detail = f": {_error_text(error)}" if error is not None else ""
            raise MediaError(
                self.info.path, f"no frame could be decoded (file truncated or corrupt{detail})"
            )
        covered = last + self.frame_duration
        if covered < duration - max(1.0, 3 * self.frame_duration):
            detail = f" ({_error_text(error)})" if error is not None else ""
            self.truncated = f"decoding stopped at {last:.1f} s of {duration:.1f} s: file truncated or corrupt{detail}"

    def _by_time(self, fmt, stream, clock: _Clock) -> Iterator[SampledFrame]:
        self._start(stream)
        ctx = stream.codec_context
        interval, count, eps = self.interval, self.planned, 1e-6
        # Non-reference frames are skipped while their packets' times (display times, as the
        # PTS are trusted when skipping) are before the next target: no other frame needs them,
        # and none of them is the first at or after the target. Half a frame absorbs rounding.
        margin = 0.5 * self.frame_duration
        # The first frames are all decoded, to learn whether the PTS can be trusted (_Clock).
        calibration = 30
        decoded = 0
        strategy = self.strategy
        index = stream.index_entries if strategy in ("auto", "seek") else None
        can_seek = index is not None and len(index) > 0
        time_base = stream.time_base or Fraction(1, 1)
        origin = clock.origin
        state: dict = {}
        k = 0
        last_ts: float | None = None  # of the last decoded frame
        pending = None  # (timestamp, frame): the last decoded frame not yielded
        frontier = -math.inf  # how far demuxing and decoding got since the start or last seek
        sought_for = -1
        key_time = -math.inf
        if strategy == "nonref":
            ctx.skip_frame = "NONREF"

        while k < count and not state.get("eof"):
            target = k * interval
            seek_to = None
            for packet in self._packets(fmt, stream, state):
                packet_ts = packet.pts if packet.pts is not None else packet.dts
                packet_time = None if packet_ts is None else float(packet_ts * time_base) - origin
                shortcuts = decoded >= calibration and not clock.uses_dts
                if strategy == "auto":
                    far = shortcuts and packet_time is not None and packet_time < target - margin
                    ctx.skip_frame = "NONREF" if far else "DEFAULT"
                for frame in self._decode(packet, state):
                    decoded += 1
                    ts = clock(frame)
                    last_ts = ts
                    frontier = max(frontier, ts)
                    self.progress = min(ts / self.info.duration, 1.0)
                    if ts + eps < target:
                        pending = (ts, frame)
                        continue
                    pending = None
                    yield SampledFrame(ts, self._image(frame))
                    while k < count and k * interval <= ts + eps:  # targets this frame answers
                        k += 1
                    if k >= count:
                        return
                    target = k * interval
                if packet_time is not None:
                    frontier = max(frontier, packet_time)
                if not (can_seek and shortcuts):
                    continue
                # Seek when it skips enough video to pay for flushing the decoder.
                if strategy == "seek":
                    if sought_for != k and k > 0:
                        seek_to = target
                elif strategy == "auto":
                    key = index.search_timestamp(
                        round((target + origin) / time_base), backward=True
                    )
                    if key >= 0:
                        key_time = float(index[key].timestamp * time_base) - origin
                        if key_time - frontier >= max(SEEK_MIN_GAP_S, 8 * self.frame_duration):
                            seek_to = target
                if seek_to is not None:
                    break
            else:
                state["eof"] = True  # the packets ran out (or the demuxer failed)
            if seek_to is None:
                break
            sought_for = k
            try:
                fmt.seek(round((seek_to + origin) / time_base), stream=stream, backward=True)
            except Exception:  # an unseekable file is still read to the end
                can_seek = False
                continue
            clock.reset()
            pending = None
            # Decoding restarts at the keyframe before the target: never seek back behind it.
            frontier = key_time if strategy == "auto" else -math.inf

        if k < count and pending is not None:
            # The last target falls inside the last frame's display time (after its start).
            ts, frame = pending
            if k * interval - ts < 1.5 * self.frame_duration:
                yield SampledFrame(ts, self._image(frame))
                k += 1
        if k < count or last_ts is None:
            self._finish(state, last_ts)

    def _features(self, frame, size: tuple[int, int]) -> np.ndarray:
        small = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
        return np.asarray(small.to_image().convert("HSV"), dtype=np.int16)

    def _by_scene(self, fmt, stream, clock: _Clock) -> Iterator[SampledFrame]:
        self._start(stream)
        ctx = stream.codec_context
        if self.strategy != "sequential":
            ctx.skip_frame = "NONREF"  # cuts need not be found to the frame
        width = _FEATURE_WIDTH
        height = max(2, round(width * self.info.height / (self.info.width * self._sar)))
        size = (width, height)
        recent: deque[float] = deque(maxlen=max(4, round(self.info.fps)))
        state: dict = {}
        previous = None
        scene_start = 0.0
        picked = False
        yielded = 0
        last = None  # (timestamp, frame) of the last decoded frame
        cap = self.max_frames

        def keep(ts: float, frame) -> SampledFrame:
            nonlocal yielded
            yielded += 1
            if self.progress > 0:  # scenes so far, extrapolated over the rest of the video
                guess = round(yielded / self.progress)
                self.planned = min(max(guess, yielded + 1), self._scene_bound)
            return SampledFrame(ts, self._image(frame), scene_start)

        for packet in self._packets(fmt, stream, state):
            for frame in self._decode(packet, state):
                ts = clock(frame)
                self.progress = min(ts / self.info.duration, 1.0)
                features = self._features(frame, size)
                if previous is not None and previous.shape == features.shape:
                    change = np.abs(features - previous)
                    hue = change[..., 0]
                    np.minimum(hue, 256 - hue, out=hue)  # hue is an angle
                    score = float(change.mean())
                    baseline = sum(recent) / len(recent) if recent else 0.0
                    if (
                        score >= self.scene_threshold
                        and score >= SCENE_RATIO * baseline
                        and ts - scene_start >= self.scene_spacing
                    ):
                        if not picked and last is not None:  # a short scene: its last frame
                            yield keep(*last)
                            if cap is not None and yielded >= cap:
                                break
                        scene_start, picked = ts, False
                        recent.clear()
                    else:
                        recent.append(score)
                previous = features
                if not picked and ts + 1e-6 >= scene_start + SCENE_PICK_DELAY_S:
                    yield keep(ts, frame)
                    picked = True
                last = (ts, frame)
                if cap is not None and yielded >= cap:
                    break
            else:
                continue
            break  # the cap is reached
        else:
            if not picked and last is not None:  # the video ends within the pick delay
                yield keep(*last)
            self._finish(state, last[0] if last is not None else None)
        self.planned = yielded


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


# -- browser playback --------------------------------------------------------------------------

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
