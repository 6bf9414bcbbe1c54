"""What every model role shares: where its weights come from, loading them or explaining the ways
out, the device, a description of the model for the Home page and `framescope status`, and the
protocols the pipelines are written against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from core.errors import ModelUnavailable
from core.models.chat import VisionLanguageModel

T = TypeVar("T")

HUB, LOCAL_DIR, LOCAL_FILE, TAG = "hub", "local-dir", "local-file", "tag"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def resolve_device(requested: str = "auto") -> str:
    """`auto` picks CUDA, then Apple MPS, else CPU."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def ways_out(role_setting: str) -> str:
    return (
        "Ways out: (1) connect to the internet once, so the weights download into the Hugging Face "
        "cache (~/.cache/huggingface, or $HF_HOME); (2) point "
        f"{role_setting} at local weights you already have; (3) run with the offline `tiny` profile "
        "(FRAMESCOPE_PROFILE=tiny or --profile tiny): tiny random-weight models, results are meaningless "
        "but everything works."
    )


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from: a hub id, a local folder or file, or a named tag."""

    kind: str  # HUB, LOCAL_DIR, LOCAL_FILE or TAG
    location: str  # the hub id, the absolute path, or the tag

    @property
    def is_local(self) -> bool:
        return self.kind in (LOCAL_DIR, LOCAL_FILE)


def weights_source(value: str, setting: str, *, tags: bool = False) -> WeightsSource:
    """Parse a model setting: `hf-hub:org/name`, `local-dir:PATH`, an existing folder or file, a
    path-like value (`./`, `/`, `~`, or a weights file suffix), or else a hub id (`org/name`) or,
    where the loader has named weights (`tags=True`, open_clip), a tag.

    Raises:
        ModelUnavailable: a local path is named that does not exist (the message names `setting`).
    """
    value = value.strip()
    if value.startswith("hf-hub:"):
        return WeightsSource(HUB, value.removeprefix("hf-hub:"))
    explicit_dir = value.startswith("local-dir:")
    raw = value.removeprefix("local-dir:")
    local = Path(raw).expanduser()
    if local.is_dir():
        return WeightsSource(LOCAL_DIR, str(local.resolve()))
    if local.is_file() and not explicit_dir:
        return WeightsSource(LOCAL_FILE, str(local.resolve()))
    looks_local = explicit_dir or raw.startswith((".", "/", "~")) or raw.endswith(WEIGHT_SUFFIXES)
    if looks_local:
        what = "folder" if explicit_dir or not raw.endswith(WEIGHT_SUFFIXES) else "file"
        raise ModelUnavailable(f"{setting}: the {what} {raw} does not exist. " + ways_out(setting))
    if tags and "/" not in value:
        return WeightsSource(TAG, value)
    return WeightsSource(HUB, value)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_or_explain(what: str, source: str, ways: str, load: Callable[[], T]) -> T:
    """`load()`, or a ModelUnavailable that says what could not be loaded, why, and the ways out."""
    try:
        return load()
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"Cannot load {what} '{source}': {first_line(exc)}. {ways}") from exc


# -- what a model is -------------------------------------------------------------------------------

REAL, TINY, ENDPOINT = "real", "random (tiny profile)", "endpoint"


@dataclass(frozen=True)
class ModelInfo:
    """One model role as the Home page and `framescope status` show it."""

    role: str  # "image-text embeddings (CLIP)", "captioner (BLIP)", ...
    name: str
    key: str  # names the weights: caches and indexes made with one key are never mixed
    device: str
    weights: str  # REAL, TINY or ENDPOINT

    @property
    def real_weights(self) -> bool:
        return self.weights != TINY


class Model:
    """What every loaded model says of itself. `key` names its weights: captions, embeddings and
    indexes made with one key are never mixed with another's."""

    def __init__(self, *, key: str, name: str, device: str, real_weights: bool) -> None:
        self.key, self.name, self.device, self.real_weights = key, name, device, real_weights


# -- the interfaces the pipelines use --------------------------------------------------------------


class TextModel(Protocol):
    """A chat model that answers in text (local transformers or an OpenAI-compatible endpoint)."""

    name: str
    key: str
    real_weights: bool
    context_tokens: int

    def complete(self, system: str, user: str, *, max_new_tokens: int = 256) -> str: ...

    def count_tokens(self, text: str) -> int: ...


__all__ = [
    "ENDPOINT",
    "REAL",
    "TINY",
    "Model",
    "ModelInfo",
    "TextModel",
    "VisionLanguageModel",
    "WeightsSource",
    "load_or_explain",
    "resolve_device",
    "ways_out",
    "weights_source",
]
