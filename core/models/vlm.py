"""Vision-language models that answer questions about frames: one interface, two backends.

- `LocalVlm`: a transformers image-text-to-text model (SmolVLM2, Qwen2.5-VL, or any such model with
  a chat template) on this machine. Frames go in as decoded images, each preceded by its time
  ("Frame at 0:12:") so answers can refer to moments. Generation is bounded and serialised by a
  lock (the model is shared by all sessions). A follow-up about the same frames reuses their
  preprocessed pixels' vision-tower output (a small LRU keyed by the frames' content), so only the
  text side runs again.
- `EndpointVlm`: an OpenAI-compatible `/chat/completions` server (vLLM, Ollama, llama.cpp server,
  hosted APIs), frames sent as base64 JPEG. Bounded timeout, bounded retries with backoff on
  connection errors, 429 and 5xx; every failure is a `ModelUnavailable` whose message says what
  happened. The API key is sent as a bearer token and never appears in messages, repr or logs.

`load_vlm(settings)` picks the endpoint when a base URL is set, else the local model (the `tiny`
profile builds a random-weight tiny SmolVLM2-class model offline).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import inspect
import io
import json
import logging
import socket
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from core.errors import ConfigError, ModelUnavailable, QueryError
from core.models.clip import resolve_device, ways_out

log = logging.getLogger(__name__)

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


def format_timestamp(seconds: float) -> str:
    """0:12, 12:05, 1:02:03 (whole seconds, rounded down)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def frame_label(frame: VlmFrame, index: int, count: int) -> str | None:
    """The text put before a frame: its time, or "Image n:" for one of several stills."""
    if frame.timestamp is not None:
        return f"Frame at {format_timestamp(frame.timestamp)}:"
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
    """Answers questions about frames. `key` names the weights (or endpoint and model)."""

    name: str
    key: str
    real_weights: bool

    @abstractmethod
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

    def describe(
        self, frames: Sequence[VlmFrame], *, max_new_tokens: int = 128, system: str | None = None
    ) -> str:
        """A description of the frames (`answer` with a fixed prompt)."""
        return self.answer(frames, DESCRIBE_PROMPT, max_new_tokens=max_new_tokens, system=system)


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


class LocalVlm(VisionLanguageModel):
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
        self.model = model.eval()
        self.processor = processor
        self.key = key
        self.name = name
        self.device = device
        self.real_weights = real_weights
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

    def answer(
        self,
        frames: Sequence[VlmFrame],
        question: str,
        history: Sequence[Turn] = (),
        *,
        max_new_tokens: int = 128,
        system: str | None = None,
    ) -> str:
        prompt = self.render(self.messages(frames, _question(question), history, system))
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

    try:
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=_dtype_for(device)).to(
            device
        )
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailable(
            f"Cannot load the vision-language model '{source}': {reason}. "
            + ways_out(VLM_WAYS_OUT)
            + " (4) set FRAMESCOPE_VLM_BASE_URL to an OpenAI-compatible server (vLLM, Ollama, "
            "llama.cpp) that serves a vision model."
        ) from exc
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


# -- OpenAI-compatible endpoints -------------------------------------------------------------------

MAX_REPLY_BYTES = 16 * 1024 * 1024
RETRYABLE = (429, 500, 502, 503, 504)


def jpeg_data_url(image: Image.Image, side: int = FRAME_SIDE, quality: int = 85) -> str:
    """The image as a `data:image/jpeg;base64,...` URL, longest side at most `side`."""
    out = io.BytesIO()
    _fit(image, side).save(out, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _public_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts)


class EndpointVlm(VisionLanguageModel):
    """A vision-language model behind an OpenAI-compatible chat-completions API."""

    real_weights = True

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 2,
        backoff: float = 0.5,
        history_turns: int = HISTORY_TURNS,
        image_side: int = FRAME_SIDE,
    ) -> None:
        url = (base_url or "").strip().rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            if url.endswith(suffix):
                url = url[: -len(suffix)]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"FRAMESCOPE_VLM_BASE_URL={_public_url(url)!r} is not an http(s) URL "
                "(e.g. http://localhost:8000/v1 for vLLM, http://localhost:11434/v1 for Ollama)"
            )
        self.base_url = url
        self.public_url = _public_url(url)
        self.model = (model or "").strip() or None
        self._api_key = (api_key or "").strip() or None
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.history_turns = history_turns
        self.image_side = image_side
        self._model_lock = threading.Lock()
        self._opener = urllib.request.build_opener()  # honours http(s)_proxy / no_proxy
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.name = f"{self.model or 'endpoint model'} @ {host}"
        self.key = f"endpoint/{self.public_url}/{self.model or '-'}"

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"EndpointVlm(base_url={self.public_url!r}, model={self.model!r}, api_key={key})"

    # request ------------------------------------------------------------------------------------

    def request_body(
        self,
        frames: Sequence[VlmFrame],
        question: str,
        history: Sequence[Turn] = (),
        *,
        max_new_tokens: int = 128,
        system: str | None = None,
    ) -> dict:
        """The chat-completions request: system, earlier turns, then labelled frames, question."""
        messages: list[dict] = []
        if system and system.strip():
            messages.append({"role": "system", "content": system.strip()})
        for turn in recent_history(history, self.history_turns):
            messages.append({"role": turn.role, "content": turn.text})
        content: list[dict] = []
        for i, frame in enumerate(frames):
            label = frame_label(frame, i, len(frames))
            if label:
                content.append({"type": "text", "text": label})
            content.append(
                {
                    "type": "image_url",
                    "image_url": {"url": jpeg_data_url(frame.image, self.image_side)},
                }
            )
        content.append({"type": "text", "text": _question(question)})
        messages.append({"role": "user", "content": content})
        return {
            "model": self.model or "",
            "messages": messages,
            "max_tokens": bound_tokens(max_new_tokens),
        }

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _detail(self, raw: bytes) -> str:
        """A short, key-free excerpt of an error reply: its `error.message` when it has one."""
        text = raw.decode("utf-8", "replace").strip()
        try:
            payload = json.loads(text)
            error = payload.get("error", payload) if isinstance(payload, dict) else payload
            if isinstance(error, dict):
                text = str(error.get("message") or error.get("detail") or error)
            elif error:
                text = str(error)
        except ValueError:
            pass
        text = " ".join(self._redact(text).split())[:200]
        return f": {text}" if text else ""

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        """JSON request with bounded retries; any failure becomes a clear ModelUnavailable."""
        url = f"{self.base_url}{path}"
        where = f"the VLM endpoint {self.public_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        last = ""
        for attempt in range(self.retries + 1):
            delay = self.backoff * (2**attempt)
            request = urllib.request.Request(url, data=data, method=method, headers=self._headers())
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = response.read(MAX_REPLY_BYTES + 1)
                break
            except urllib.error.HTTPError as exc:
                status, detail = exc.code, self._detail(exc.read(4096) if exc.fp else b"")
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                exc.close()
                if status in (401, 403):
                    raise ModelUnavailable(
                        f"{where} refused the key (HTTP {status}){detail}. Check "
                        "FRAMESCOPE_VLM_API_KEY" + ("" if self._api_key else " (none is set)") + "."
                    ) from None
                if status == 404:
                    raise ModelUnavailable(
                        f"{where} answered HTTP 404 (not found){detail}: the model name "
                        f"({self.model or 'none given'}; FRAMESCOPE_VLM_ENDPOINT_MODEL) or the URL "
                        "is wrong. An OpenAI-compatible base URL usually ends in /v1."
                    ) from None
                if status not in RETRYABLE:
                    raise ModelUnavailable(
                        f"{where} rejected the request (HTTP {status}){detail}. The model may not "
                        "accept images, or the request is too large (fewer frames may help)."
                    ) from None
                last = f"HTTP {status}{detail}"
                if retry_after and retry_after.strip().isdigit():
                    delay = min(max(delay, float(retry_after)), 30.0)
            except TimeoutError as exc:  # socket.timeout is TimeoutError
                raise ModelUnavailable(
                    f"{where} did not answer within {self.timeout:g} s "
                    "(FRAMESCOPE_VLM_TIMEOUT). The server may be overloaded or the model too slow "
                    "for this many frames."
                ) from exc
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, TimeoutError):
                    raise ModelUnavailable(
                        f"{where} did not answer within {self.timeout:g} s "
                        "(FRAMESCOPE_VLM_TIMEOUT)."
                    ) from exc
                if isinstance(reason, ConnectionRefusedError):
                    last = "connection refused (is the server running, on this host and port?)"
                elif isinstance(reason, socket.gaierror):
                    last = f"unknown host ({reason})"
                else:
                    last = f"cannot connect ({self._redact(str(reason))})"
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                last = f"connection failed ({type(exc).__name__}: {self._redact(str(exc))})"
            if attempt < self.retries:
                log.warning("VLM endpoint %s: %s; retrying in %.1f s", self.public_url, last, delay)
                time.sleep(delay)
        else:
            raise ModelUnavailable(
                f"{where} failed after {self.retries + 1} attempt(s): {last}. "
                "Check FRAMESCOPE_VLM_BASE_URL and that the server is up."
            )
        if len(raw) > MAX_REPLY_BYTES:
            raise ModelUnavailable(f"{where} sent a reply larger than {MAX_REPLY_BYTES >> 20} MB")
        try:
            payload = json.loads(raw)
        except ValueError:
            excerpt = " ".join(self._redact(raw[:80].decode("utf-8", "replace")).split())
            raise ModelUnavailable(
                f"{where} sent a reply that is not JSON (it begins {excerpt!r}): is the base URL "
                "an OpenAI-compatible API?"
            ) from None
        if not isinstance(payload, dict):
            raise ModelUnavailable(f"{where} sent JSON that is not an object")
        return payload

    def _model_name(self) -> str:
        """The configured model name, or the endpoint's first listed model (asked once)."""
        with self._model_lock:
            if self.model:
                return self.model
            try:
                listed = self._call("GET", "/models").get("data") or []
                self.model = str(listed[0]["id"])
            except (ModelUnavailable, LookupError, TypeError) as exc:
                raise ModelUnavailable(
                    f"No model name is set for the VLM endpoint {self.public_url} and it did not "
                    f"list one ({exc}). Set FRAMESCOPE_VLM_ENDPOINT_MODEL."
                ) from None
            self.name = f"{self.model} @ {self.name.split(' @ ', 1)[1]}"
            return self.model

    def answer(
        self,
        frames: Sequence[VlmFrame],
        question: str,
        history: Sequence[Turn] = (),
        *,
        max_new_tokens: int = 128,
        system: str | None = None,
    ) -> str:
        body = self.request_body(
            frames, question, history, max_new_tokens=max_new_tokens, system=system
        )
        body["model"] = self._model_name()
        payload = self._call("POST", "/chat/completions", body)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            error = payload.get("error")
            detail = f" (error: {self._detail(json.dumps(error))[2:]})" if error else ""
            raise ModelUnavailable(
                f"the VLM endpoint {self.public_url} sent a reply without "
                f"choices[0].message.content{detail}"
            ) from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ModelUnavailable(
                f"the VLM endpoint {self.public_url} sent a message content that is not text"
            )
        return clean_text(content)


# -- choosing one ----------------------------------------------------------------------------------


def load_vlm(settings) -> VisionLanguageModel:
    """The VLM the settings ask for: the endpoint when `vlm_base_url` is set; else the local model
    `vlm_model` (hub id or folder), or with profile `tiny` a tiny random-weight SmolVLM2 built
    offline.

    Raises:
        ModelUnavailable: the weights cannot be had; the message says why and the ways out.
        ConfigError: the base URL is not an http(s) URL.
    """
    base_url = getattr(settings, "vlm_base_url", None)
    if base_url:
        vlm = EndpointVlm(
            base_url,
            getattr(settings, "vlm_model_name", None),
            api_key=getattr(settings, "vlm_api_key", None),
            timeout=getattr(settings, "vlm_timeout", 120.0),
            retries=getattr(settings, "vlm_retries", 2),
        )
        log.info("using VLM endpoint %r", vlm)
        return vlm
    device = resolve_device(getattr(settings, "device", "auto"))
    if settings.profile == "tiny":
        from core.models.tiny import TINY_SMOLVLM_VERSION, tiny_smolvlm_dir

        return load_local_vlm(
            str(tiny_smolvlm_dir(settings.model_cache)),
            device=device,
            key=f"smolvlm/tiny/{TINY_SMOLVLM_VERSION}",
            name="framescope-tiny-smolvlm2",
            real_weights=False,
        )
    source = getattr(settings, "vlm_model", None) or DEFAULT_VLM
    local = Path(source).expanduser()
    if local.is_dir():
        source = str(local.resolve())
    elif source.startswith((".", "/", "~")):
        raise ModelUnavailable(
            f"vision-language model folder {source} does not exist. " + ways_out(VLM_WAYS_OUT)
        )
    return load_local_vlm(source, device=device, key=f"vlm/{source}", name=source)
