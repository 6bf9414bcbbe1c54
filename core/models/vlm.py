"""Local vision-language models (transformers) that answer questions about frames, and `load_vlm`.

`LocalVlm` runs an image-text-to-text model (SmolVLM2, Qwen2.5-VL, or any such model with a chat
template) on this machine. Frames go in as decoded images, each preceded by its time ("Frame at
0:12:") so answers can refer to moments. Generation is bounded and serialised by a lock (the model
is shared by all sessions). A follow-up about the same frames reuses their preprocessed pixels'
vision-tower output (a small LRU keyed by the frames' content), so only the text side runs again.

`load_vlm(settings)` picks the OpenAI-compatible endpoint (`core.models.endpoint.EndpointVlm`)
when a base URL is set, else the local model (the `tiny` profile builds a random-weight tiny
SmolVLM2-class model offline).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from core.config import Settings
from core.errors import ModelUnavailable
from core.models.base import (
    Model,
    load_or_explain,
    resolve_device,
    ways_out,
    weights_source,
)
from core.models.chat import (
    DEFAULT_VLM,
    FRAME_SIDE,
    HISTORY_TURNS,
    MAX_NEW_TOKENS,
    Turn,
    VisionLanguageModel,
    VlmFrame,
    _fit,
    _question,
    bound_tokens,
    clean_text,
    frame_label,
    recent_history,
)

__all__ = [
    "DEFAULT_VLM",
    "HISTORY_TURNS",
    "MAX_NEW_TOKENS",
    "LocalVlm",
    "Turn",
    "VlmFrame",
    "bound_tokens",
    "load_local_vlm",
    "load_vlm",
    "visual_tokens_per_frame",
]

log = logging.getLogger(__name__)

# -- local transformers models -------------------------------------------------------------------


@dataclass
class _Encoded:
    """A set of frames as the model saw them: processor output minus pixels, and image features."""

    processed: Any  # the image processor's output without the pixel tensors
    replacements: list[str]  # the expanded image placeholder text per frame
    features: Any  # what `get_image_features` returned (vision tower + connector)


def _frames_digest(images: Sequence[Image.Image]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for image in images:
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


class LocalVlm(Model, VisionLanguageModel):
    """A transformers image-text-to-text model and its processor.

    `feature_cache` sets how many frame sets keep their vision features (0 turns the cache off).
    Frames are scaled so their longest side is at most `frame_side`. A single image may be split
    into tiles by processors that do that (SmolVLM); several frames never are, so the visual tokens
    of a video question stay bounded (64 per frame for SmolVLM2).
    """

    def __init__(
        self,
        model,
        processor,
        *,
        key: str,
        name: str,
        device: str,
        real_weights: bool,
        history_turns: int = HISTORY_TURNS,
        frame_side: int = FRAME_SIDE,
        feature_cache: int = 4,
    ) -> None:
        super().__init__(key=key, name=name, device=device, real_weights=real_weights)
        self.model = model.eval()
        self.processor = processor
        self.history_turns = history_turns
        self.frame_side = frame_side
        self.feature_cache = feature_cache
        self._lock = threading.Lock()  # generate() and the processor are shared by all sessions
        self._encoded: OrderedDict[str, _Encoded] = OrderedDict()
        self.last_usage: dict[str, Any] = {}  # tokens and cache use of the latest answer
        tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer = tokenizer
        self.image_token = getattr(processor, "image_token", None)
        self.image_token_id = (
            tokenizer.convert_tokens_to_ids(self.image_token) if self.image_token else None
        )
        image_processor = getattr(processor, "image_processor", None)
        self._can_split = hasattr(image_processor, "do_image_splitting")
        encoder = getattr(model.base_model, "get_image_features", None)
        supports = getattr(model, "_supports_mm_encoder_outputs", lambda: False)
        # The cached path needs the model to take pre-computed image features and the processor to
        # build its image inputs in `_process_images` (transformers 5); else answers run plainly.
        cacheable = supports() and hasattr(processor, "_process_images")
        self._encoder = encoder if encoder is not None and cacheable else None
        self._encoder_args = (
            set(inspect.signature(encoder).parameters) - {"kwargs"} if self._encoder else set()
        )

    def __repr__(self) -> str:
        return f"LocalVlm(name={self.name!r}, key={self.key!r}, device={self.device!r})"

    # prompt -----------------------------------------------------------------------------------

    def messages(
        self,
        frames: Sequence[VlmFrame],
        question: str,
        history: Sequence[Turn] = (),
        system: str | None = None,
    ) -> list[dict]:
        """Chat messages: system, earlier turns as text, then the frames (labelled) and question."""
        messages: list[dict] = []
        if system and system.strip():
            messages.append(
                {"role": "system", "content": [{"type": "text", "text": system.strip()}]}
            )
        for turn in recent_history(history, self.history_turns):
            messages.append({"role": turn.role, "content": [{"type": "text", "text": turn.text}]})
        content: list[dict] = []
        for i, frame in enumerate(frames):
            label = frame_label(frame, i, len(frames))
            if label:
                content.append({"type": "text", "text": ("\n" if i else "") + label})
            content.append({"type": "image"})
        content.append({"type": "text", "text": ("\n" if frames else "") + question})
        messages.append({"role": "user", "content": content})
        return messages

    def render(self, messages: list[dict]) -> str:
        """The prompt text from the model's chat template (a system turn is folded into the first
        user turn for templates that reject the system role)."""
        try:
            return self.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:
            if not messages or messages[0]["role"] != "system":
                raise ModelUnavailable(
                    f"{self.name}: its chat template cannot format the question ({exc})"
                ) from exc
            system, rest = messages[0], [dict(m) for m in messages[1:]]
            first = rest[0]
            first["content"] = [
                *system["content"],
                {"type": "text", "text": "\n\n"},
                *first["content"],
            ]
            return self.processor.apply_chat_template(
                rest, add_generation_prompt=True, tokenize=False
            )

    def _images(self, frames: Sequence[VlmFrame]) -> list[Image.Image]:
        return [_fit(f.image, self.frame_side) for f in frames]

    def _processor_kwargs(self, n_images: int) -> dict:
        if self._can_split and n_images:
            return {"images_kwargs": {"do_image_splitting": n_images == 1}}
        return {}

    def prepare(
        self,
        frames: Sequence[VlmFrame],
        question: str,
        history: Sequence[Turn] = (),
        *,
        system: str | None = None,
    ):
        """Model inputs (token ids and preprocessed pixels) for a question, without any cache."""
        prompt = self.render(self.messages(frames, _question(question), history, system))
        images = self._images(frames)
        with self._lock:
            return self.processor(
                text=[prompt],
                images=images or None,
                return_tensors="pt",
                **self._processor_kwargs(len(images)),
            )

    def generate(
        self, inputs, *, max_new_tokens: int = 128, min_new_tokens: int = 0, **extra
    ) -> str:
        """Greedy generation from prepared inputs; returns the new text only."""
        with self._lock:
            return self._generate(inputs, max_new_tokens, min_new_tokens, **extra)

    def _generate(self, inputs, max_new_tokens: int, min_new_tokens: int = 0, **extra) -> str:
        inputs = inputs.to(self.device) if hasattr(inputs, "to") else inputs
        for k, v in list(inputs.items()):
            if torch.is_tensor(v) and v.is_floating_point():
                inputs[k] = v.to(self.model.dtype)
        kwargs = {"max_new_tokens": bound_tokens(max_new_tokens), "do_sample": False}
        if min_new_tokens:
            kwargs["min_new_tokens"] = min(min_new_tokens, kwargs["max_new_tokens"])
        if (
            self.model.generation_config.pad_token_id is None
            and self.tokenizer.pad_token_id is not None
        ):
            kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs, **extra)
        prompt_len = inputs["input_ids"].shape[1]
        new = out[:, prompt_len:]
        ids = inputs["input_ids"][0]
        self.last_usage = {
            "prompt_tokens": int(prompt_len),
            "image_tokens": int((ids == self.image_token_id).sum()) if self.image_token_id else 0,
            "new_tokens": int(new.shape[1]),
        }
        return clean_text(self.tokenizer.batch_decode(new, skip_special_tokens=True)[0])

    # the cached path ---------------------------------------------------------------------------

    def _encode_features(self, inputs):
        kwargs = {k: inputs[k] for k in self._encoder_args if k in inputs}
        with torch.inference_mode():
            features = self._encoder(**kwargs, return_dict=True)
        if getattr(features, "pooler_output", None) is not None:
            # Only the pooled (connector) output is used to fill the image tokens: drop the rest.
            for name in ("last_hidden_state", "hidden_states", "attentions"):
                if getattr(features, name, None) is not None:
                    setattr(features, name, None)
        return features

    def _answer_cached(self, prompt: str, images: list[Image.Image], max_new_tokens: int) -> str:
        digest = _frames_digest(images)
        entry = self._encoded.get(digest)
        captured: list = []
        original = self.processor._process_images

        def process_images(imgs, **kwargs):
            if entry is not None:
                return entry.processed, entry.replacements
            result = original(imgs, **kwargs)
            captured.append(result)
            return result

        self.processor._process_images = process_images  # this call only: we hold the lock
        try:
            inputs = self.processor(
                text=[prompt],
                images=images,
                return_tensors="pt",
                **self._processor_kwargs(len(images)),
            )
        finally:
            del self.processor._process_images
        inputs = inputs.to(self.device)
        if entry is None:
            for k, v in list(inputs.items()):
                if torch.is_tensor(v) and v.is_floating_point():
                    inputs[k] = v.to(self.model.dtype)
            processed, replacements = captured[0]
            light = type(processed)(
                {k: v for k, v in processed.items() if not k.startswith("pixel_")}
            )
            entry = _Encoded(light, list(replacements), self._encode_features(inputs))
            self._encoded[digest] = entry
            while len(self._encoded) > self.feature_cache:
                self._encoded.popitem(last=False)
            hit = False
        else:
            self._encoded.move_to_end(digest)
            hit = True
        text_inputs = {k: v for k, v in inputs.items() if not k.startswith("pixel_")}
        text = self._generate(
            text_inputs, max_new_tokens, mm_encoder_outputs={"image": entry.features}
        )
        self.last_usage.update(frames=len(images), cached_frames=hit)
        return text

    # the interface ------------------------------------------------------------------------------

    def _answer(self, frames, question, history, max_new_tokens, system) -> str:
        prompt = self.render(self.messages(frames, question, history, system))
        images = self._images(frames)
        with self._lock:
            if images and self._encoder is not None and self.feature_cache > 0:
                try:
                    return self._answer_cached(prompt, images, max_new_tokens)
                except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
                    # A model family whose generate() does not take pre-computed image features
                    # as expected: answer plainly from now on.
                    log.warning("%s: frame feature cache off (%s)", self.name, exc)
                    self._encoder = None
                    self._encoded.clear()
            inputs = self.processor(
                text=[prompt],
                images=images or None,
                return_tensors="pt",
                **self._processor_kwargs(len(images)),
            )
            text = self._generate(inputs, max_new_tokens)
            self.last_usage.update(frames=len(images), cached_frames=False)
            return text


def visual_tokens_per_frame(
    vlm: LocalVlm, size: tuple[int, int] = (768, 432), frames: int = 2
) -> float:
    """Image placeholder tokens per frame of `size` (width, height) in a several-frame question."""
    batch = [VlmFrame(Image.new("RGB", size, (128, 128, 128)), float(i)) for i in range(frames)]
    inputs = vlm.prepare(batch, "What happens?")
    return float((inputs["input_ids"][0] == vlm.image_token_id).sum()) / frames


def _dtype_for(device: str):
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


VLM_WAYS_OUT = (
    "FRAMESCOPE_VLM_MODEL (a local folder) or FRAMESCOPE_VLM_BASE_URL (an OpenAI-compatible "
    "endpoint)"
)


def load_local_vlm(
    source: str,
    *,
    device: str = "cpu",
    key: str | None = None,
    name: str | None = None,
    real_weights: bool = True,
) -> LocalVlm:
    """A transformers image-text-to-text model from a hub id or a local folder.

    Raises:
        ModelUnavailable: the weights cannot be had or the model has no chat template.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    def load():
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=_dtype_for(device))
        return processor, model.to(device)

    processor, model = load_or_explain(
        "the vision-language model",
        source,
        ways_out(VLM_WAYS_OUT)
        + " (4) set FRAMESCOPE_VLM_BASE_URL to an OpenAI-compatible server (vLLM, Ollama, "
        "llama.cpp) that serves a vision model.",
        load,
    )
    if not getattr(processor, "chat_template", None) and not getattr(
        getattr(processor, "tokenizer", None), "chat_template", None
    ):
        raise ModelUnavailable(
            f"'{source}' has no chat template, so questions cannot be put to it: use an instruct "
            "(chat) vision-language model such as SmolVLM2-*-Instruct or Qwen2.5-VL-*-Instruct."
        )
    log.info("loaded VLM %s on %s", source, device)
    return LocalVlm(
        model,
        processor,
        key=key or f"vlm/{source}",
        name=name or source,
        device=device,
        real_weights=real_weights,
    )


# -- choosing one ----------------------------------------------------------------------------------


def load_vlm(settings: Settings) -> VisionLanguageModel:
    """The VLM the settings ask for: the endpoint when FRAMESCOPE_VLM_BASE_URL is set; else the local
    model `vlm_model` (hub id or folder), or with profile `tiny` a tiny random-weight SmolVLM2 built
    offline.

    Raises:
        ModelUnavailable: the weights cannot be had; the message says why and the ways out.
        ConfigError: the base URL is not an http(s) URL.
    """
    if settings.vlm_endpoint.base_url:
        from core.models.endpoint import EndpointVlm

        vlm = EndpointVlm.from_settings(settings.vlm_endpoint)
        log.info("using VLM endpoint %r", vlm)
        return vlm
    device = resolve_device(settings.device)
    if settings.profile == "tiny":
        from core.models.tiny import TINY_SMOLVLM_VERSION, tiny_smolvlm_dir

        return load_local_vlm(
            str(tiny_smolvlm_dir(settings.model_cache)),
            device=device,
            key=f"smolvlm/tiny/{TINY_SMOLVLM_VERSION}",
            name="framescope-tiny-smolvlm2",
            real_weights=False,
        )
    source = weights_source(settings.vlm_model, "FRAMESCOPE_VLM_MODEL").location
    return load_local_vlm(source, device=device, key=f"vlm/{source}", name=source)
