"""Frame captions with BLIP (transformers): batched, bounded generation, thread-safe."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from core.config import Settings
from core.errors import ModelUnavailable
from core.models.clip import resolve_device, ways_out

log = logging.getLogger(__name__)


class Captioner:
    """A BLIP captioning model and its processor. `key` names the weights, for the caption cache."""

    def __init__(
        self, model, processor, *, key: str, name: str, device: str, real_weights: bool
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.key = key
        self.name = name
        self.device = device
        self.real_weights = real_weights
        self._lock = threading.Lock()  # generate() and the tokenizer are shared by all sessions

    def caption(
        self,
        images: Sequence[Image.Image],
        prompt: str | None = None,
        *,
        max_new_tokens: int = 30,
        batch_size: int = 8,
        num_beams: int = 1,
    ) -> list[str]:
        """One caption per RGB image. With `prompt` ("a picture of") captions continue that text.

        `max_new_tokens` bounds every generation: random or odd weights may never emit an end token.
        """
        prompt = (prompt or "").strip() or None
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            with self._lock, torch.inference_mode():
                inputs = self.processor(
                    images=chunk,
                    text=[prompt] * len(chunk) if prompt else None,
                    return_tensors="pt",
                ).to(self.device)
                out = self.model.generate(
                    **inputs, max_new_tokens=max_new_tokens, num_beams=num_beams
                )
                texts = self.processor.batch_decode(out, skip_special_tokens=True)
            captions += [" ".join(t.split()) for t in texts]
        return captions


def load_captioner(settings: Settings) -> Captioner:
    """Load the BLIP captioner the settings ask for (hub id or local folder; `tiny` builds one offline).

    Raises:
        ModelUnavailable: the weights cannot be had; the message says why and the ways out.
    """
    from transformers import BlipForConditionalGeneration, BlipProcessor

    device = resolve_device(settings.device)
    if settings.profile == "tiny":
        from core.models.tiny import TINY_BLIP_VERSION, tiny_blip_dir

        source, key, real = (
            str(tiny_blip_dir(settings.model_cache)),
            f"blip/tiny/{TINY_BLIP_VERSION}",
            False,
        )
    else:
        source, real = settings.caption_model, True
        local = Path(source).expanduser()
        if local.is_dir():
            source = str(local.resolve())
        elif source.startswith((".", "/", "~")):
            raise ModelUnavailable(
                f"captioning model folder {source} does not exist. "
                + ways_out("FRAMESCOPE_CAPTION_MODEL")
            )
        key = f"blip/{source}"
    try:
        processor = BlipProcessor.from_pretrained(source)
        model = BlipForConditionalGeneration.from_pretrained(source).to(device)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailable(
            f"Cannot load the captioning model '{source}': {reason}. "
            + ways_out("FRAMESCOPE_CAPTION_MODEL (a local folder)")
        ) from exc
    log.info("loaded captioner %s on %s", source, device)
    return Captioner(
        model,
        processor,
        key=key,
        name=settings.caption_model if real else "framescope-tiny-blip",
        device=device,
        real_weights=real,
    )
