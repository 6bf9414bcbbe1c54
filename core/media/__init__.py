"""Safe media loading: images and videos are checked (size, pixels, format, integrity) before use.

files     file hashing and the sizes shared by image and video checks
images    image formats and extensions, load_image, make_thumbnail
probe     video sniffing and probing: VideoLimits, VideoInfo, probe_video
sampling  frame sampling: SampledFrame, FrameSampler
playback  browser playback: transcode_for_browser
"""

from __future__ import annotations

from core.media.files import file_sha256
from core.media.images import (
    IMAGE_EXTENSIONS,
    SUPPORTED_LIST,
    THUMBNAIL_SIZE,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    load_image,
    make_thumbnail,
)
from core.media.playback import transcode_for_browser
from core.media.probe import VIDEO_EXTENSIONS, VideoInfo, VideoLimits, probe_video
from core.media.sampling import FrameSampler, SampledFrame

__all__ = [
    "IMAGE_EXTENSIONS",
    "SUPPORTED_LIST",
    "THUMBNAIL_SIZE",
    "UNSUPPORTED_IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FrameSampler",
    "SampledFrame",
    "VideoInfo",
    "VideoLimits",
    "file_sha256",
    "load_image",
    "make_thumbnail",
    "probe_video",
    "transcode_for_browser",
]
