"""Video: zero-shot label probabilities over time, for sampled frames or a whole video file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.media import FrameSampler, SampledFrame, VideoLimits, probe_video
from core.models.clip import ClipEmbedder
from core.zeroshot.classification import DEFAULT_THRESHOLD, Classification, _check_mode, classify
from core.zeroshot.labels import (
    DEFAULT_TEMPLATES,
    _check_labels,
    label_embeddings,
    validate_templates,
)

# =============================================================================================
# Video: probabilities over time
# =============================================================================================


@dataclass(frozen=True, eq=False)
class FrameClassification:
    """Sampled frames classified: row i of `classification` is the frame at `timestamps[i]`
    seconds. `classification.probs[:, j]` over `timestamps` is label j's line in a chart."""

    timestamps: np.ndarray  # (n,) float64 seconds
    classification: Classification
    truncated: str | None = None  # classify_video: why decoding stopped early, if it did

    def series(self) -> dict[str, list[float]]:
        """label -> its probability at each timestamp (for a line chart)."""
        c = self.classification
        return {label: c.probs[:, j].tolist() for j, label in enumerate(c.labels)}


def classify_frames(
    embedder: ClipEmbedder,
    frames: Iterable[SampledFrame | tuple[float, Image.Image]],
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    multi_label: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
) -> FrameClassification:
    """Classify video frames (SampledFrame, or (seconds, PIL image) pairs) as they stream in.

    Frames are embedded batch by batch, so memory holds one batch of images, not the video.
    Labels and templates are checked before the first frame is decoded.
    """
    checked_labels = _check_labels(labels)
    checked_templates = validate_templates(templates)
    _check_mode(checked_labels, multi_label)
    label_embeddings(embedder, checked_labels, checked_templates)  # fail (or warm) early
    times: list[float] = []
    chunks: list[np.ndarray] = [np.empty((0, embedder.dim), np.float32)]
    images: list[Image.Image] = []
    for frame in frames:
        if isinstance(frame, SampledFrame):
            seconds, image = frame.timestamp, frame.image
        else:
            seconds, image = frame
        times.append(float(seconds))
        images.append(image.convert("RGB") if image.mode != "RGB" else image)
        if len(images) >= batch_size:
            chunks.append(embedder.embed_images(images, batch_size=batch_size))
            images = []
    if images:
        chunks.append(embedder.embed_images(images, batch_size=batch_size))
    result = classify(
        embedder,
        np.concatenate(chunks),
        checked_labels,
        checked_templates,
        multi_label=multi_label,
        threshold=threshold,
    )
    timestamps = np.asarray(times, dtype=np.float64)
    timestamps.setflags(write=False)
    return FrameClassification(timestamps=timestamps, classification=result)


def classify_video(
    embedder: ClipEmbedder,
    path: str | Path,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    every: float = 1.0,
    max_frames: int | None = 600,
    multi_label: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
    limits: VideoLimits | None = None,
) -> FrameClassification:
    """Probe a video, sample a frame every `every` seconds (at most `max_frames`, spread evenly
    over the whole video when it is longer) and classify the frames.

    Raises:
        MediaError: the file is not a usable video. ConfigError: bad sampling options.
        QueryError: bad labels or templates.
    """
    info = probe_video(Path(path), limits or VideoLimits())
    sampler = FrameSampler(info, every=every, max_frames=max_frames)
    result = classify_frames(
        embedder,
        sampler,
        labels,
        templates,
        multi_label=multi_label,
        threshold=threshold,
        batch_size=batch_size,
    )
    return FrameClassification(result.timestamps, result.classification, sampler.truncated)
