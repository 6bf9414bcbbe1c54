"""CLIP image and text embeddings with open_clip: batched, unit-norm float32, thread-safe."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.config import Settings
from core.errors import ModelUnavailable, QueryError
from core.types import Vectors

log = logging.getLogger(__name__)


def resolve_device(requested: str = "auto") -> str:
    """`auto` picks CUDA, then Apple MPS, else CPU."""
    if requested != "auto":
        return requested
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


class ClipEmbedder:
    """An open_clip model with its preprocessing and tokenizer.

    `key` names the weights (architecture and pretrained tag or file hash): embeddings and indexes
    made with one key are never mixed with another's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess,
        tokenizer,
        *,
        key: str,
        name: str,
        pretrained: str,
        device: str,
        real_weights: bool,
        dim: int,
        text_cache_size: int = 4096,
    ) -> None:
        self.model = model.eval()
        self._preprocess = preprocess
        self.tokenizer = tokenizer
        self.key = key
        self.name = name
        self.pretrained = pretrained
        self.device = device
        self.real_weights = real_weights
        self.dim = dim
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        self._lock = threading.Lock()  # one forward at a time: bounded memory, safe across sessions
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL RGB image -> (3, H, W) model input. Thread-safe; runs in loader threads."""
        return self._preprocess(image)

    def embed_tensors(self, batch: torch.Tensor) -> Vectors:
        """(n, 3, H, W) preprocessed images -> (n, dim) unit vectors."""
        with self._lock, torch.inference_mode():
            feats = self.model.encode_image(batch.to(self.device))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 16) -> Vectors:
        out = [np.empty((0, self.dim), np.float32)]
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            out.append(self.embed_tensors(torch.stack([self.preprocess(im) for im in chunk])))
        return np.concatenate(out)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Texts -> (n, dim) unit vectors; repeated texts come from a cache."""
        if any(not t.strip() for t in texts):
            raise QueryError("empty text: type some words to search for")
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            tokens = self.tokenizer(list(missing))
            with self._lock, torch.inference_mode():
                feats = self.model.encode_text(tokens.to(self.device))
                feats = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
            for text, vec in zip(missing, feats, strict=True):
                self._text_cache[text] = vec.astype(np.float32)
                while len(self._text_cache) > self._text_cache_size:
                    self._text_cache.popitem(last=False)
        vectors = []
        for t in texts:
            self._text_cache.move_to_end(t)
            vectors.append(self._text_cache[t])
        return np.stack(vectors).astype(np.float32)

    def token_count(self, text: str) -> int:
        """Tokens the text needs, start and end tokens included (truncated above `context_length`)."""
        from open_clip.tokenizer import _tokenizer

        return len(_tokenizer.encode(text)) + 2


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_clip(settings: Settings) -> ClipEmbedder:
    """Load the CLIP embedder the settings ask for.

    Profile `tiny` builds (once) and loads a random-weight tiny CLIP offline. Profile `default` loads
    `settings.clip_model` with `settings.clip_pretrained`, a pretrained tag (downloaded from the hub
    and cached on first use) or the path of a local weights file.

    Raises:
        ModelUnavailable: the weights cannot be had; the message says why and the ways out.
    """
    import open_clip

    device = resolve_device(settings.device)
    if settings.profile == "tiny":
        from core.models.tiny import TINY_CLIP_NAME, TINY_CLIP_VERSION, tiny_clip_weights

        name, pretrained = TINY_CLIP_NAME, str(tiny_clip_weights(settings.model_cache))
        key, real = f"open_clip/{TINY_CLIP_NAME}/{TINY_CLIP_VERSION}", False
    else:
        name, pretrained, real = settings.clip_model, settings.clip_pretrained, True
        local = Path(pretrained).expanduser()
        if (
            local.suffix in (".pt", ".pth", ".bin", ".safetensors")
            or local.is_file()
            or "/" in pretrained
        ):
            if not local.is_file():
                raise ModelUnavailable(
                    f"CLIP weights file {pretrained} does not exist. "
                    + ways_out("FRAMESCOPE_CLIP_PRETRAINED")
                )
            pretrained = str(local.resolve())
            key = f"open_clip/{name}/file-{_file_digest(local)}"
        else:
            key = f"open_clip/{name}/{pretrained}"
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device
        )
        tokenizer = open_clip.get_tokenizer(name)
        dim = int(open_clip.get_model_config(name)["embed_dim"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailable(
            f"Cannot load CLIP {name} with weights '{pretrained}': {reason}. "
            + ways_out("FRAMESCOPE_CLIP_MODEL / FRAMESCOPE_CLIP_PRETRAINED (a local weights file)")
        ) from exc
    log.info("loaded CLIP %s (%s) on %s", name, key, device)
    return ClipEmbedder(
        model,
        preprocess,
        tokenizer,
        key=key,
        name=name,
        pretrained=settings.clip_pretrained if real else "random (tiny profile)",
        device=device,
        real_weights=real,
        dim=dim,
    )
