"""Video question answering: choose frames (uniform or question-aware), ask the VLM, keep the chat.

Candidate frames of a video are decoded once, embedded with CLIP, and kept in a small per-video
cache, so a follow-up question neither decodes nor embeds again.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.config import Settings
from core.errors import MediaError, QueryError
from core.media import IMAGE_EXTENSIONS, FrameSampler, load_image, probe_video
from core.models.clip import ClipEmbedder
from core.models.vlm import Turn, VlmFrame
from core.types import Vectors

UNIFORM, QUESTION = "uniform", "question"
SELECTIONS = (UNIFORM, QUESTION)
CANDIDATES = 64  # frames decoded per video to choose from
FRAME_SIDE = 768  # longest side of a decoded candidate frame
HISTORY_TURNS = 6  # earlier turns sent with a follow-up (bounded, so long chats stay cheap)
SYSTEM_PROMPT = (
    "You answer questions about a video from a few of its frames, each labelled with its time. "
    "Answer briefly and only from what the frames show; say so when they do not show the answer. "
    "Refer to moments by their times."
)


@dataclass(frozen=True)
class UsedFrame:
    timestamp: float | None  # None for a still image
    jpeg: bytes


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    frames: tuple[UsedFrame, ...]
    model: str
    seconds: float


@dataclass
class CandidateFrames:
    """Decoded frames of one video (or a few images) with their CLIP vectors."""

    timestamps: list[float | None]
    images: list[Image.Image]
    vectors: Vectors  # (n, dim)
    note: str | None = None  # e.g. the video was truncated


class FrameCache:
    """A few videos' candidate frames, shared by all sessions (thread-safe LRU)."""

    def __init__(self, max_videos: int = 4) -> None:
        self.max_videos = max_videos
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, CandidateFrames] = OrderedDict()
        self.decodes = 0

    def get(self, path: Path, embedder: ClipEmbedder, settings: Settings) -> CandidateFrames:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime, embedder.key)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        frames = decode_candidates(path, embedder, settings)
        with self._lock:
            self.decodes += 1
            self._items[key] = frames
            while len(self._items) > self.max_videos:
                self._items.popitem(last=False)
        return frames


FRAMES = FrameCache()


def decode_candidates(
    path: Path, embedder: ClipEmbedder, settings: Settings, count: int = CANDIDATES
) -> CandidateFrames:
    """Up to `count` frames spread over the video, or the image itself, embedded with CLIP."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        image = load_image(
            path, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        ).image
        image.thumbnail((FRAME_SIDE, FRAME_SIDE))
        return CandidateFrames([None], [image], embedder.embed_images([image]))
    limits = settings.video
    info = probe_video(path, limits)
    every = max(info.duration / count, 0.1)
    sampler = FrameSampler(info, every=every, max_frames=count, max_side=FRAME_SIDE)
    timestamps, images = [], []
    for frame in sampler:
        timestamps.append(frame.timestamp)
        images.append(frame.image)
    if not images:
        raise MediaError(path, sampler.truncated or "no frame could be decoded")
    return CandidateFrames(timestamps, images, embedder.embed_images(images), sampler.truncated)


def select_frames(
    frames: CandidateFrames, n: int, question_vector: np.ndarray | None = None
) -> list[int]:
    """Indices of n frames in time order: spread evenly, or (with a question) the frames most
    similar to the question in CLIP space for half of them and even coverage for the rest."""
    total = len(frames.images)
    n = max(1, min(n, total))
    uniform = np.linspace(0, total - 1, n).round().astype(int).tolist()
    if question_vector is None or n == total:
        return uniform  # spacing >= 1 when n <= total, so no index repeats
    similarity = frames.vectors @ question_vector
    chosen = [int(i) for i in np.argsort(-similarity, kind="stable")[: math.ceil(n / 2)]]
    rest = [i for i in range(total) if i not in chosen]
    for x in np.linspace(0, len(rest) - 1, n - len(chosen)).round().astype(int):
        chosen.append(rest[x])
    return sorted(set(chosen))


def _jpeg(image: Image.Image, side: int = 320) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((side, side))
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=85)
    return out.getvalue()


def ask(
    vlm,
    embedder: ClipEmbedder,
    frames: CandidateFrames,
    question: str,
    history: Sequence[Answer] = (),
    *,
    n_frames: int = 8,
    selection: str = QUESTION,
    max_new_tokens: int = 256,
) -> Answer:
    """Answer a question about a video (or images) from n selected frames and the recent chat."""
    question = (question or "").strip()
    if not question:
        raise QueryError("empty question: type what you want to know about the video")
    if selection not in SELECTIONS:
        raise QueryError(f"frame selection must be one of {', '.join(SELECTIONS)}")
    question_vector = embedder.embed_texts([question])[0] if selection == QUESTION else None
    picked = select_frames(frames, n_frames, question_vector)
    turns: list[Turn] = []
    for earlier in list(history)[-HISTORY_TURNS // 2 :]:
        turns += [Turn("user", earlier.question), Turn("assistant", earlier.text)]
    started = time.monotonic()
    text = vlm.answer(
        [VlmFrame(frames.images[i], frames.timestamps[i]) for i in picked],
        question,
        turns,
        max_new_tokens=max_new_tokens,
        system=SYSTEM_PROMPT,
    )
    used = tuple(UsedFrame(frames.timestamps[i], _jpeg(frames.images[i])) for i in picked)
    return Answer(question, text.strip(), used, vlm.name, time.monotonic() - started)


def images_as_frames(
    images: Sequence[tuple[str, bytes]], embedder: ClipEmbedder, settings: Settings
) -> CandidateFrames:
    """Uploaded still images as frames to ask about ("describe this scene")."""
    decoded = []
    for name, data in images:
        image = load_image(
            data,
            name=name,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        ).image
        image.thumbnail((FRAME_SIDE, FRAME_SIDE))
        decoded.append(image)
    if not decoded:
        raise QueryError("no image given")
    return CandidateFrames([None] * len(decoded), decoded, embedder.embed_images(decoded))
