"""The text LLM that reconciles chunk descriptions into summaries: local transformers or an endpoint."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import torch

from core.config import Settings
from core.models.base import (
    Model,
    TextModel,
    load_or_explain,
    resolve_device,
    ways_out,
    weights_source,
)

log = logging.getLogger(__name__)


class LocalLlm(Model):
    """A causal LM with a chat template, run with transformers; thread-safe."""

    def __init__(
        self, model, tokenizer, *, name: str, key: str, device: str, real_weights: bool
    ) -> None:
        super().__init__(key=key, name=name, device=device, real_weights=real_weights)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context_tokens = int(getattr(model.config, "max_position_embeddings", 4096))
        self._lock = threading.Lock()

    def complete(self, system: str, user: str, *, max_new_tokens: int = 256) -> str:
        """The model's reply to one user message under a system prompt (bounded length)."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        with self._lock, torch.inference_mode():
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            ids = {k: v.to(self.device) for k, v in ids.items()}
            # Random (tiny) weights end at once or repeat one token forever; they are made to say
            # something (no repeats, a few tokens at least) so the flow shows. Real weights are not.
            extra = (
                {}
                if self.real_weights
                else {"min_new_tokens": min(8, max_new_tokens), "no_repeat_ngram_size": 1}
            )
            out = self.model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                **extra,
            )
            text = self.tokenizer.decode(
                out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return " ".join(text.split())

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text).input_ids)


def load_llm(settings: Settings) -> TextModel:
    """The text model the settings ask for: the endpoint when FRAMESCOPE_LLM_BASE_URL is set (with
    its own FRAMESCOPE_LLM_* timeout, retries and key), else local (Qwen2.5-1.5B-Instruct by
    default; a tiny offline model with the `tiny` profile).

    Raises:
        ModelUnavailable: the weights cannot be had; the message says why and the ways out.
        ConfigError: the base URL is not an http(s) URL.
    """
    if settings.llm_endpoint.base_url:
        from core.models.endpoint import EndpointLlm

        endpoint = settings.llm_endpoint
        if not endpoint.model:  # the local model's name is the one most servers know it by
            endpoint = replace(endpoint, model=settings.llm_model)
        return EndpointLlm(endpoint)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(settings.device)
    if settings.profile == "tiny":
        from core.models.tiny import TINY_LLM_VERSION, tiny_llm_dir

        source, key, real = (
            str(tiny_llm_dir(settings.model_cache)),
            f"llm/tiny/{TINY_LLM_VERSION}",
            False,
        )
    else:
        source, real = weights_source(settings.llm_model, "FRAMESCOPE_LLM_MODEL").location, True
        key = f"llm/{source}"

    def load():
        tokenizer = AutoTokenizer.from_pretrained(source)
        return tokenizer, AutoModelForCausalLM.from_pretrained(source).to(device)

    tokenizer, model = load_or_explain(
        "the text model",
        source,
        ways_out(
            "FRAMESCOPE_LLM_MODEL (a local folder), or set FRAMESCOPE_LLM_BASE_URL to an OpenAI-compatible endpoint"
        ),
        load,
    )
    log.info("loaded LLM %s on %s", source, device)
    return LocalLlm(
        model,
        tokenizer,
        name=settings.llm_model if real else "framescope-tiny-llm",
        key=key,
        device=device,
        real_weights=real,
    )
