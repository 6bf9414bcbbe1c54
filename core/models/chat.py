"""What a question to a vision-language model is made of: frames with their times, earlier turns,
bounded answers, and the base class both backends share."""

from __future__ import annotations

import base64
import io
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from core.errors import QueryError
from core.format import format_timestamp

DEFAULT_VLM = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
ROLES = ("user", "assistant")
HISTORY_TURNS = 8  # earlier turns sent with a question, at most (text only)
MAX_NEW_TOKENS = 2048  # hard bound on any answer, whatever the caller asks
FRAME_SIDE = 768  # longest side of a frame handed to a model or sent to an endpoint
DESCRIBE_PROMPT = (
    "Describe what these frames show: the scene, the people and objects, and what happens."
)


@dataclass(frozen=True)
class VlmFrame:
    """A decoded frame and its time in the video (seconds; None for a still image)."""

    image: Image.Image
    timestamp: float | None = None


@dataclass(frozen=True)
class Turn:
    """An earlier message of the chat: `role` is "user" or "assistant"."""

    role: str
    text: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise QueryError(
                f"a chat turn's role must be one of {', '.join(ROLES)}, not {self.role!r}"
            )


def frame_label(frame: VlmFrame, index: int, count: int) -> str | None:
    """The text put before a frame: its time, or "Image n:" for one of several stills."""
    if frame.timestamp is not None:
        return f"Frame at {format_timestamp(frame.timestamp, whole_seconds=True)}:"
    if count > 1:
        return f"Image {index + 1}:"
    return None


def recent_history(history: Sequence[Turn], turns: int = HISTORY_TURNS) -> list[Turn]:
    """The last `turns` non-empty turns, starting with a user turn (chat templates expect that)."""
    kept = [t for t in history if t.text and t.text.strip()][-turns:] if turns > 0 else []
    while kept and kept[0].role != "user":
        kept.pop(0)
    return kept


def bound_tokens(max_new_tokens: int) -> int:
    return max(1, min(int(max_new_tokens), MAX_NEW_TOKENS))


def _question(question: str) -> str:
    question = (question or "").strip()
    if not question:
        raise QueryError("empty question: type what you want to know about the frames")
    return question


def clean_text(text: str) -> str:
    """Model output without control characters (newlines and tabs kept), stripped."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc").strip()


def _fit(image: Image.Image, side: int) -> Image.Image:
    """RGB, longest side at most `side` (a copy when it changes)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if max(image.size) > side:
        image = image.copy()
        image.thumbnail((side, side), Image.Resampling.BICUBIC)
    return image


class VisionLanguageModel(ABC):
    """Answers questions about frames: the interface `qa`, `summarize` and the pages use.

    `key` names the weights (or endpoint and model). Backends implement `_answer`, which gets a
    checked question and a bounded token count.
    """

    name: str
    key: str
    real_weights: bool

    def answer(
        self,
        frames: Sequence[VlmFrame],
        question: str,
        history: Sequence[Turn] = (),
        *,
        max_new_tokens: int = 128,
        system: str | None = None,
    ) -> str:
        """The model's answer to `question` about `frames`, after the earlier `history` (text only).

        Raises:
            QueryError: the question is empty.
            ModelUnavailable: the model or endpoint cannot answer (message says why).
        """
        return self._answer(
            frames, _question(question), history, bound_tokens(max_new_tokens), system
        )

    @abstractmethod
    def _answer(
        self,
        frames: Sequence[VlmFrame],
        question: str,
        history: Sequence[Turn],
        max_new_tokens: int,
        system: str | None,
    ) -> str: ...

    def describe(
        self, frames: Sequence[VlmFrame], *, max_new_tokens: int = 128, system: str | None = None
    ) -> str:
        """A description of the frames (`answer` with a fixed prompt)."""
        return self.answer(frames, DESCRIBE_PROMPT, max_new_tokens=max_new_tokens, system=system)


def jpeg_data_url(image: Image.Image, side: int = FRAME_SIDE, quality: int = 85) -> str:
    """The image as a `data:image/jpeg;base64,...` URL, longest side at most `side`."""
    out = io.BytesIO()
    _fit(image, side).save(out, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
