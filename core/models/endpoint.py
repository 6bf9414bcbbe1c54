"""One client for OpenAI-compatible chat endpoints (vLLM, Ollama, llama.cpp server, hosted APIs).

Bounded timeout, bounded retries with backoff on connection errors, 429 and 5xx; every failure is
a `ModelUnavailable` whose message says what happened and names the settings of the endpoint it
belongs to (FRAMESCOPE_VLM_* or FRAMESCOPE_LLM_*). The API key is sent as a bearer token and never
appears in messages, repr or logs.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from core.config import Endpoint
from core.errors import ConfigError, ModelUnavailable
from core.models.chat import (
    FRAME_SIDE,
    HISTORY_TURNS,
    Turn,
    VisionLanguageModel,
    VlmFrame,
    bound_tokens,
    clean_text,
    frame_label,
    jpeg_data_url,
    recent_history,
)

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 16 * 1024 * 1024
RETRYABLE = (429, 500, 502, 503, 504)


def _public_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts)


class ChatEndpoint:
    """An OpenAI-compatible `/chat/completions` API, for the role its `Endpoint` settings name.

    `label` is how messages call it ("VLM", "text-model").
    """

    def __init__(self, settings: Endpoint, label: str, *, backoff: float = 0.5) -> None:
        self.settings = settings
        self.label = label
        url = (settings.base_url or "").strip().rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            if url.endswith(suffix):
                url = url[: -len(suffix)]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{settings.variable('BASE_URL')}={_public_url(url)!r} is not an http(s) URL "
                "(e.g. http://localhost:8000/v1 for vLLM, http://localhost:11434/v1 for Ollama)"
            )
        self.base_url = url
        self.public_url = _public_url(url)
        self.model = (settings.model or "").strip() or None
        self._api_key = (settings.api_key or "").strip() or None
        self.timeout = float(settings.timeout)
        self.retries = max(0, int(settings.retries))
        self.backoff = backoff
        self._model_lock = threading.Lock()
        self._opener = urllib.request.build_opener()  # honours http(s)_proxy / no_proxy
        self.host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.key = f"endpoint/{self.public_url}/{self.model or '-'}"

    @property
    def name(self) -> str:
        return f"{self.model or 'endpoint model'} @ {self.host}"

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"ChatEndpoint(base_url={self.public_url!r}, model={self.model!r}, api_key={key})"

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

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """JSON request with bounded retries; any failure becomes a clear ModelUnavailable."""
        url = f"{self.base_url}{path}"
        where = f"the {self.label} endpoint {self.public_url}{path}"
        var = self.settings.variable
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
                        + var("API_KEY")
                        + ("" if self._api_key else " (none is set)")
                        + "."
                    ) from None
                if status == 404:
                    raise ModelUnavailable(
                        f"{where} answered HTTP 404 (not found){detail}: the model name "
                        f"({self.model or 'none given'}; {self.settings.model_env}) or the URL "
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
                    f"({var('TIMEOUT')}). The server may be overloaded or the model too slow "
                    "for this request."
                ) from exc
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, TimeoutError):
                    raise ModelUnavailable(
                        f"{where} did not answer within {self.timeout:g} s ({var('TIMEOUT')})."
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
                log.warning(
                    "%s endpoint %s: %s; retrying in %.1f s",
                    self.label,
                    self.public_url,
                    last,
                    delay,
                )
                time.sleep(delay)
        else:
            raise ModelUnavailable(
                f"{where} failed after {self.retries + 1} attempt(s): {last}. "
                f"Check {var('BASE_URL')} and that the server is up ({var('RETRIES')} sets the retries)."
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

    def model_name(self) -> str:
        """The configured model name, or the endpoint's first listed model (asked once)."""
        with self._model_lock:
            if self.model:
                return self.model
            try:
                listed = self.call("GET", "/models").get("data") or []
                self.model = str(listed[0]["id"])
            except (ModelUnavailable, LookupError, TypeError) as exc:
                raise ModelUnavailable(
                    f"No model name is set for the {self.label} endpoint {self.public_url} and it "
                    f"did not list one ({exc}). Set {self.settings.model_env}."
                ) from None
            return self.model

    def chat(self, messages: list[dict], max_tokens: int) -> str:
        """The assistant's reply to `messages` (OpenAI chat format), as clean text."""
        body = {"model": self.model_name(), "messages": messages, "max_tokens": max_tokens}
        payload = self.call("POST", "/chat/completions", body)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            error = payload.get("error")
            detail = f" (error: {self._detail(json.dumps(error))[2:]})" if error else ""
            raise ModelUnavailable(
                f"the {self.label} endpoint {self.public_url} sent a reply without "
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
                f"the {self.label} endpoint {self.public_url} sent a message content that is not text"
            )
        return clean_text(content)


class EndpointVlm(VisionLanguageModel):
    """A vision-language model behind an OpenAI-compatible endpoint; frames go as base64 JPEG."""

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
        settings = Endpoint(
            "FRAMESCOPE_VLM",
            "FRAMESCOPE_VLM_ENDPOINT_MODEL",
            base_url=base_url,
            model=model,
            api_key=api_key,
            timeout=timeout,
            retries=retries,
        )
        self.client = ChatEndpoint(settings, "VLM", backoff=backoff)
        self.history_turns = history_turns
        self.image_side = image_side
        self.key = self.client.key

    @classmethod
    def from_settings(cls, endpoint: Endpoint) -> EndpointVlm:
        return cls(
            endpoint.base_url or "",
            endpoint.model,
            api_key=endpoint.api_key,
            timeout=endpoint.timeout,
            retries=endpoint.retries,
        )

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def base_url(self) -> str:
        return self.client.base_url

    @property
    def model(self) -> str | None:
        return self.client.model

    @property
    def timeout(self) -> float:
        return self.client.timeout

    @property
    def retries(self) -> int:
        return self.client.retries

    def __repr__(self) -> str:
        return repr(self.client).replace("ChatEndpoint", "EndpointVlm", 1)

    def messages(
        self, frames: Sequence[VlmFrame], question: str, history: Sequence[Turn], system: str | None
    ) -> list[dict]:
        """The chat messages: system, earlier turns, then the labelled frames and the question."""
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
        content.append({"type": "text", "text": question})
        messages.append({"role": "user", "content": content})
        return messages

    def _answer(self, frames, question, history, max_new_tokens, system) -> str:
        return self.client.chat(self.messages(frames, question, history, system), max_new_tokens)


class EndpointLlm:
    """An OpenAI-compatible chat endpoint used as the text model (FRAMESCOPE_LLM_* settings)."""

    real_weights = True

    def __init__(self, endpoint: Endpoint, *, context_tokens: int = 8192) -> None:
        self.client = ChatEndpoint(endpoint, "text-model")
        self.key = self.client.key
        self.context_tokens = context_tokens

    @property
    def name(self) -> str:
        return self.client.name

    def complete(self, system: str, user: str, *, max_new_tokens: int = 256) -> str:
        messages = [{"role": "user", "content": user.strip()}]
        if system and system.strip():
            messages.insert(0, {"role": "system", "content": system.strip()})
        return self.client.chat(messages, bound_tokens(max_new_tokens))

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1  # a common estimate; endpoints do not expose their tokenizer
