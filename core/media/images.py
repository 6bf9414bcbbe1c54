"""Images: accepted formats and extensions, safe loading to RGB, and JPEG thumbnails."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import MediaError
from core.format import format_size

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
            label, f"file is {format_size(size)}; the limit is {format_size(max_bytes)}"
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
