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
from core.models.base import (
    HUB,
    LOCAL_FILE,
    TAG,
    Model,
    load_or_explain,
    resolve_device,
    ways_out,
    weights_source,
)
from core.types import Vectors

log = logging.getLogger(__name__)


class ClipEmbedder(Model):
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
        super().__init__(key=key, name=name, device=device, real_weights=real_weights)
        self.model = model.eval()
        self._preprocess = preprocess
        self.tokenizer = tokenizer
        self.pretrained = pretrained
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
    `settings.clip_model` with `settings.clip_pretrained`: an open_clip pretrained tag (downloaded
    and cached on first use), the path of a local weights file, or `hf-hub:org/name` (an open_clip
    model on the Hugging Face hub, which names its own architecture).

    Raises:
        ModelUnavailable: the weights cannot be had; the message says why and the ways out.
    """
    import open_clip

    device = resolve_device(settings.device)
    name, pretrained, real = settings.clip_model, settings.clip_pretrained, True
    if settings.profile == "tiny":
        from core.models.tiny import TINY_CLIP_NAME, TINY_CLIP_VERSION, tiny_clip_weights

        name, pretrained = TINY_CLIP_NAME, str(tiny_clip_weights(settings.model_cache))
        key, real = f"open_clip/{TINY_CLIP_NAME}/{TINY_CLIP_VERSION}", False
    else:
        source = weights_source(pretrained, "FRAMESCOPE_CLIP_PRETRAINED", tags=True)
        if source.kind == LOCAL_FILE:
            pretrained = source.location
            key = f"open_clip/{name}/file-{_file_digest(Path(pretrained))}"
        elif source.kind == HUB:
            name, pretrained = f"hf-hub:{source.location}", None
            key = f"open_clip/{name}"
        elif source.kind == TAG:
            key = f"open_clip/{name}/{pretrained}"
        else:
            raise ModelUnavailable(
                f"FRAMESCOPE_CLIP_PRETRAINED={pretrained} is a folder: give the weights file in it "
                "(.pt, .bin or .safetensors). " + ways_out("FRAMESCOPE_CLIP_PRETRAINED")
            )

    def load():
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device
        )
        tokenizer = open_clip.get_tokenizer(name)
        config = open_clip.get_model_config(name)
        if config is not None:
            return model, preprocess, tokenizer, int(config["embed_dim"])
        with torch.inference_mode():  # a hub model names no local config: ask the model itself
            dim = model.encode_text(tokenizer(["a"]).to(device)).shape[-1]
        return model, preprocess, tokenizer, int(dim)

    model, preprocess, tokenizer, dim = load_or_explain(
        f"CLIP {name} with weights",
        str(pretrained),
        ways_out("FRAMESCOPE_CLIP_MODEL / FRAMESCOPE_CLIP_PRETRAINED (a local weights file)"),
        load,
    )
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
