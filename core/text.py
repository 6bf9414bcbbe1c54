"""On-screen text: the words in images and video frames, read with RapidOCR.

RapidOCR runs PaddleOCR's detection and recognition models (PP-OCR, ONNX) with ONNX Runtime; the
models ship inside its wheel, so reading text needs no download and works offline with real
weights in every profile. One reader serves every session; it reads one image at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import ModelUnavailable
from core.jobs import Job, job_or_new
from core.media import FrameSampler, VideoInfo

MIN_SCORE = 0.5  # recognitions below this confidence are dropped (noise on textures)
MAX_SIDE = 4096  # larger images are scaled down first: the detector resizes anyway


@dataclass(frozen=True)
class TextBox:
    """A line of text found in an image: the words, the model's confidence, and its four corners
    (x, y) in the image's pixels, clockwise from top left."""

    text: str
    score: float
    box: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "score": round(self.score, 4),
            "box": [list(p) for p in self.box],
        }


@dataclass(frozen=True)
class FrameText:
    """The text read in one sampled frame of a video."""

    timestamp: float
    lines: tuple[TextBox, ...]


class TextReader:
    """RapidOCR's detector, direction classifier and recognizer, loaded once."""

    def __init__(self, engine, *, min_score: float = MIN_SCORE) -> None:
        self._engine = engine
        self.min_score = min_score
        self._lock = threading.Lock()
        self.name = "RapidOCR (PP-OCR)"
        self.key = "rapidocr/ppocr"

    def read(self, image: Image.Image) -> list[TextBox]:
        """The lines of text in an RGB image, top to bottom (empty when there is none)."""
        scale = 1.0
        if max(image.size) > MAX_SIDE:
            scale = MAX_SIDE / max(image.size)
            image = image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                Image.Resampling.LANCZOS,
            )
        pixels = np.asarray(image.convert("RGB"))
        with self._lock:
            result = self._engine(pixels)
        if result is None or result.txts is None or result.boxes is None:
            return []
        lines = [
            TextBox(
                " ".join(str(text).split()),
                float(score),
                tuple((float(x) / scale, float(y) / scale) for x, y in box),
            )
            for text, score, box in zip(result.txts, result.scores, result.boxes, strict=True)
            if float(score) >= self.min_score and str(text).strip()
        ]
        return sorted(lines, key=lambda line: (min(y for _, y in line.box), line.box[0][0]))

    def read_video(
        self, info: VideoInfo, *, every: float = 1.0, max_frames: int = 7200, job: Job | None = None
    ) -> Iterator[FrameText]:
        """The text of frames sampled every `every` seconds, as they are decoded (a stopped job
        ends the stream; what was read is kept by the caller)."""
        job = job_or_new(job)
        sampler = FrameSampler(info, every=every, max_frames=max_frames)
        for done, frame in enumerate(sampler, 1):
            if job.stopped:
                return
            yield FrameText(frame.timestamp, tuple(self.read(frame.image)))
            job.report(done, sampler.planned, f"read the text of {done} frames")


def load_text_reader(*, min_score: float = MIN_SCORE) -> TextReader:
    """The OCR reader, with the models from RapidOCR's wheel.

    Raises:
        ModelUnavailable: RapidOCR or ONNX Runtime is not installed, or its models are missing.
    """
    try:
        from rapidocr import RapidOCR

        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        engine = RapidOCR(params={"Global.log_level": "error"})
        for handler in logging.getLogger("RapidOCR").handlers:
            handler.setLevel(logging.WARNING)
    except Exception as exc:
        raise ModelUnavailable(
            f"Cannot load the text reader (RapidOCR): {str(exc).strip() or type(exc).__name__}. "
            "Install it with the project's requirements (rapidocr and onnxruntime); its models "
            "ship inside the package."
        ) from exc
    return TextReader(engine, min_score=min_score)


def character_error_rate(expected: str, found: str) -> float:
    """Edit distance between two strings (characters) over the length of the expected one."""
    a, b = expected, found
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] / max(len(a), 1)


def describe(path: Path, lines: list[TextBox]) -> str:
    """One line for a terminal: the file and what it says (or that it says nothing)."""
    text = " | ".join(line.text for line in lines)
    return f"{path.name}: {text}" if text else f"{path.name}: (no text found)"
