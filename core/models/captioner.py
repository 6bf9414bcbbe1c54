"""Frame captions with BLIP (transformers): batched, bounded generation, thread-safe."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import torch
from PIL import Image

from core.config import Settings
from core.errors import QueryError
from core.models.base import Model, load_or_explain, resolve_device, ways_out, weights_source

log = logging.getLogger(__name__)


class Captioner(Model):
    """A BLIP captioning model and its processor. `key` names the weights, for the caption cache."""

    def __init__(
        self, model, processor, *, key: str, name: str, device: str, real_weights: bool
    ) -> None:
        super().__init__(key=key, name=name, device=device, real_weights=real_weights)
        self.model = model.eval()
        self.processor = processor
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
        Raises QueryError, before any work, when the prompt leaves no room for that many tokens.
        """
        prompt = (prompt or "").strip() or None
        self.check_prompt(prompt, max_new_tokens=max_new_tokens)
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

    def prompt_limit(self, max_new_tokens: int = 30) -> int:
        """The most tokens a prompt may have: the text model's positions
        (`max_position_embeddings`) less the special tokens and the `max_new_tokens` to generate."""
        positions = int(self.model.config.text_config.max_position_embeddings)
        with self._lock:
            special = len(self.processor.tokenizer("").input_ids)  # [CLS]/[BOS] and [SEP]
        return max(positions - special - max_new_tokens, 0)

    def check_prompt(self, prompt: str | None, *, max_new_tokens: int = 30) -> None:
        """QueryError when `prompt` has more tokens than `prompt_limit` allows (past the model's
        text positions generation would fail); an empty prompt always passes."""
        prompt = (prompt or "").strip()
        if not prompt:
            return
        with self._lock:  # the tokenizer is shared by all sessions
            count = len(self.processor.tokenizer(prompt, add_special_tokens=False).input_ids)
        limit = self.prompt_limit(max_new_tokens)
        if count > limit:
            raise QueryError(
                f"the prompt is {count} tokens; this captioning model takes at most {limit} "
                f"(with room for {max_new_tokens} more in the caption): shorten the prompt"
            )


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
        source = weights_source(settings.caption_model, "FRAMESCOPE_CAPTION_MODEL").location
        key, real = f"blip/{source}", True

    def load():
        processor = BlipProcessor.from_pretrained(source)
        return processor, BlipForConditionalGeneration.from_pretrained(source).to(device)

    processor, model = load_or_explain(
        "the captioning model", source, ways_out("FRAMESCOPE_CAPTION_MODEL (a local folder)"), load
    )
    log.info("loaded captioner %s on %s", source, device)
    return Captioner(
        model,
        processor,
        key=key,
        name=settings.caption_model if real else "framescope-tiny-blip",
        device=device,
        real_weights=real,
    )
