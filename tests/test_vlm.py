"""Vision-language models: the tiny SmolVLM2 and Qwen2.5-VL classes end to end, the
OpenAI-compatible endpoint backend against a real local HTTP server (answering with the tiny
SmolVLM2), its failures, and how `load_vlm` chooses. Everything runs offline on random-weight tiny
models."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import Settings
from core.errors import ConfigError, ModelUnavailable, QueryError
from core.format import format_timestamp
from core.models.endpoint import EndpointVlm
from core.models.tiny import tiny_qwen25vl_dir
from core.models.vlm import (
    HISTORY_TURNS,
    MAX_NEW_TOKENS,
    LocalVlm,
    Turn,
    VlmFrame,
    bound_tokens,
    load_local_vlm,
    load_vlm,
    visual_tokens_per_frame,
)

KEY = "sk-test-Zq8Lw3Secret"


# -- the tiny local models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def vlm_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vlm-home")


@pytest.fixture(scope="module")
def smol(vlm_home: Path) -> LocalVlm:
    vlm = load_vlm(Settings(home=vlm_home, profile="tiny", device="cpu"))
    assert isinstance(vlm, LocalVlm)
    return vlm


@pytest.fixture(scope="module")
def qwen(vlm_home: Path) -> LocalVlm:
    folder = tiny_qwen25vl_dir(vlm_home / "models")
    return load_local_vlm(str(folder), device="cpu", name="tiny-qwen25vl", real_weights=False)


@pytest.fixture(params=["smolvlm", "qwen25vl"])
def local(request, smol, qwen) -> LocalVlm:
    return smol if request.param == "smolvlm" else qwen


def noise(seed: int, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def video_frames(seed: int = 0, n: int = 3, every: float = 32.5) -> list[VlmFrame]:
    return [VlmFrame(noise(seed * 100 + i), i * every) for i in range(n)]


def test_timestamps_are_readable():
    assert format_timestamp(0, whole_seconds=True) == "0:00"
    assert format_timestamp(12.9, whole_seconds=True) == "0:12"
    assert format_timestamp(725, whole_seconds=True) == "12:05"
    assert format_timestamp(3723.4, whole_seconds=True) == "1:02:03"


def test_answers_one_image_and_timestamped_frames(local: LocalVlm):
    one = local.answer([VlmFrame(noise(1), None)], "What is in this picture?", max_new_tokens=8)
    assert isinstance(one, str)
    assert local.last_usage["frames"] == 1 and 1 <= local.last_usage["new_tokens"] <= 8

    frames = video_frames(n=3)
    prompt = local.render(local.messages(frames, "What happens?"))
    for label in ("Frame at 0:00:", "Frame at 0:32:", "Frame at 1:05:"):
        assert label in prompt
    assert (
        prompt.index("Frame at 0:00:")
        < prompt.index("Frame at 1:05:")
        < prompt.index("What happens?")
    )
    text = local.answer(frames, "What happens?", max_new_tokens=8)
    assert isinstance(text, str)
    usage = local.last_usage
    assert usage["frames"] == 3 and usage["new_tokens"] <= 8
    assert usage["image_tokens"] == 3 * visual_tokens_per_frame(local, size=(320, 240), frames=3)


def test_follow_up_uses_history_and_cached_frame_features(local: LocalVlm):
    frames = video_frames(seed=2, n=3)
    first = local.answer(frames, "What happens?", max_new_tokens=6, system="Answer briefly.")
    history = [Turn("user", "What happens?"), Turn("assistant", first or "something")]
    prompt = local.render(local.messages(frames, "And then?", history, "Answer briefly."))
    assert "Answer briefly." in prompt and "What happens?" in prompt and "And then?" in prompt
    assert prompt.index("What happens?") < prompt.index("Frame at 0:00:")  # history, then frames

    follow_up = local.answer(
        frames, "And then?", history, max_new_tokens=6, system="Answer briefly."
    )
    assert isinstance(follow_up, str)
    assert local.last_usage["cached_frames"] is True  # same frames: the vision tower did not run
    # The cached path gives exactly what preprocessing and generating from scratch gives.
    plain = local.generate(
        local.prepare(frames, "And then?", history, system="Answer briefly."), max_new_tokens=6
    )
    assert follow_up == plain


def test_history_is_bounded_and_text_only(smol: LocalVlm):
    history = []
    for i in range(20):
        history += [Turn("user", f"question number {i}"), Turn("assistant", f"answer number {i}")]
    messages = smol.messages(video_frames(n=1), "last?", history)
    earlier = messages[:-1]
    assert len(earlier) <= HISTORY_TURNS and earlier[0]["role"] == "user"
    assert all(part["type"] == "text" for m in earlier for part in m["content"])
    prompt = smol.render(messages)
    assert "question number 19" in prompt and "question number 0" not in prompt
    assert prompt.count("<image>") == 1  # frames go with the current question only


def test_different_frames_give_different_answers(smol: LocalVlm, qwen: LocalVlm):
    images = [
        noise(7),
        noise(8),
        Image.new("RGB", (320, 240), (250, 10, 10)),
        Image.new("RGB", (320, 240), (10, 10, 250)),
    ]
    for vlm in (smol, qwen):
        answers = {
            vlm.answer([VlmFrame(im, 3.0)], "What is shown?", max_new_tokens=8) for im in images
        }
        assert len(answers) > 1, f"{vlm.name}: every image got the same answer"


def test_text_only_question_and_bad_input(smol: LocalVlm):
    assert isinstance(smol.answer([], "Hello?", max_new_tokens=4), str)
    assert isinstance(smol.describe(video_frames(n=2), max_new_tokens=4), str)
    with pytest.raises(QueryError):
        smol.answer(video_frames(n=1), "   ")
    with pytest.raises(QueryError):
        Turn("narrator", "once upon a time")


def test_generation_is_bounded(smol: LocalVlm):
    smol.answer(video_frames(n=2), "Describe it all.", max_new_tokens=3)
    assert smol.last_usage["new_tokens"] <= 3
    assert bound_tokens(10**9) == MAX_NEW_TOKENS and bound_tokens(0) == 1  # asked, but clamped


def test_visual_tokens_per_frame(smol: LocalVlm, qwen: LocalVlm):
    assert (
        visual_tokens_per_frame(smol) == smol.processor.image_seq_len == 16
    )  # frames are not split
    assert 1 <= visual_tokens_per_frame(qwen) <= 16  # <= 112x112 pixels, 28x28 per token


def test_system_prompt_folded_for_templates_without_system_role(smol: LocalVlm, monkeypatch):
    real = smol.processor.apply_chat_template

    def no_system(messages, **kwargs):
        if messages[0]["role"] == "system":
            raise ValueError("System role not supported")
        return real(messages, **kwargs)

    monkeypatch.setattr(smol.processor, "apply_chat_template", no_system)
    prompt = smol.render(smol.messages(video_frames(n=1), "What?", (), "Be brief."))
    assert "Be brief." in prompt and "System:" not in prompt


# -- a local OpenAI-compatible server --------------------------------------------------------------


def decode_data_url(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def parse_timestamp(label: str) -> float:
    parts = [int(p) for p in label.removeprefix("Frame at ").rstrip(":").split(":")]
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return float(seconds)


class ChatServer:
    """A chat-completions server on 127.0.0.1 answering with a tiny local VLM, or misbehaving.

    `script` lists behaviours used in turn (the last one repeats): "ok", "sleep", "malformed",
    "no-choices", or an HTTP status code to fail with.
    """

    def __init__(self, vlm: LocalVlm) -> None:
        self.vlm = vlm
        self.requests: list[dict] = []
        self.script: list = ["ok"]
        self.models = {"data": [{"id": "served-tiny-smolvlm"}]}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes, content_type="application/json"):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_GET(self):
                server.requests.append(
                    {"method": "GET", "path": self.path, "headers": dict(self.headers)}
                )
                if self.path.endswith("/models"):
                    self._reply(200, json.dumps(server.models).encode())
                else:
                    self._reply(404, b'{"error": {"message": "no such route"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                server.requests.append(
                    {
                        "method": "POST",
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                step = server.script[min(len(server.requests) - 1, len(server.script) - 1)]
                if step == "sleep":
                    time.sleep(1.5)
                    step = "ok"
                if isinstance(step, int):
                    # A careless server that echoes the credentials it was given.
                    echo = self.headers.get("Authorization", "")
                    message = {"error": {"message": f"failure {step} for {echo}", "code": step}}
                    self._reply(step, json.dumps(message).encode())
                elif step == "malformed":
                    self._reply(200, b"<html>Service temporarily unavailable</html>", "text/html")
                elif step == "no-choices":
                    self._reply(200, json.dumps({"id": "x", "choices": []}).encode())
                elif not self.path.endswith("/v1/chat/completions"):
                    self._reply(404, b'{"error": {"message": "not found"}}')
                else:
                    text = server.answer(body)
                    reply = {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "length",
                            }
                        ],
                    }
                    self._reply(200, json.dumps(reply).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, body: dict) -> str:
        """Run the tiny VLM on what the request carries: frames, times, history, question."""
        messages = body["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        history = [Turn(m["role"], m["content"]) for m in messages[1 if system else 0 : -1]]
        frames, label = [], None
        for part in messages[-1]["content"]:
            if part["type"] == "text" and part["text"].startswith("Frame at "):
                label = part["text"]
            elif part["type"] == "image_url":
                image = decode_data_url(part["image_url"]["url"])
                frames.append(VlmFrame(image, parse_timestamp(label) if label else None))
                label = None
        question = messages[-1]["content"][-1]["text"]
        return self.vlm.answer(
            frames, question, history, max_new_tokens=body["max_tokens"], system=system
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(smol):
    srv = ChatServer(smol)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def endpoint(url: str, **kwargs) -> EndpointVlm:
    kwargs.setdefault("backoff", 0.01)
    return EndpointVlm(url, kwargs.pop("model", "tiny-smolvlm"), **kwargs)


def test_endpoint_answers_from_a_local_server(server: ChatServer, caplog):
    caplog.set_level(logging.DEBUG)
    vlm = endpoint(server.url, api_key=KEY)
    frames = [
        VlmFrame(noise(1, size=(1600, 900)), 0.0),
        VlmFrame(noise(2), 12.0),
        VlmFrame(noise(3), 75.0),
    ]
    history = [Turn("user", "Who is there?"), Turn("assistant", "Two people.")]
    text = vlm.answer(frames, "What do they do?", history, max_new_tokens=7, system="Be brief.")
    assert isinstance(text, str)

    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "tiny-smolvlm" and body["max_tokens"] == 7
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief."
    assert body["messages"][1]["content"] == "Who is there?"
    assert body["messages"][2]["content"] == "Two people."
    parts = body["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"] * 3 + ["text"]
    assert [p["text"] for p in parts if p["type"] == "text"] == [
        "Frame at 0:00:",
        "Frame at 0:12:",
        "Frame at 1:15:",
        "What do they do?",
    ]
    images = [decode_data_url(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
    assert images[0].size == (768, 432)  # the longer side is scaled to 768
    assert images[1].size == (320, 240)
    # The answer is the tiny model's on what the server decoded.
    assert text == server.answer(body)
    assert KEY not in repr(vlm) and KEY not in vlm.name and KEY not in vlm.key
    assert KEY not in caplog.text


def test_endpoint_sends_no_authorization_without_a_key(server: ChatServer):
    vlm = endpoint(server.url)
    vlm.answer([VlmFrame(noise(4), None)], "What is this?", max_new_tokens=3)
    assert "Authorization" not in server.requests[0]["headers"]
    parts = server.requests[0]["body"]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"]  # a single still has no label


def test_endpoint_asks_for_the_model_name_when_none_is_set(server: ChatServer):
    vlm = EndpointVlm(server.url + "/chat/completions/", None)  # a full URL is accepted too
    assert vlm.base_url == server.url
    vlm.answer([VlmFrame(noise(5), 1.0)], "What?", max_new_tokens=2)
    assert [r["method"] for r in server.requests] == ["GET", "POST"]
    assert server.requests[1]["body"]["model"] == "served-tiny-smolvlm"
    assert vlm.name.startswith("served-tiny-smolvlm @ 127.0.0.1:")


def failure(vlm: EndpointVlm) -> str:
    with pytest.raises(ModelUnavailable) as info:
        vlm.answer([VlmFrame(noise(6), 2.0)], "What?", max_new_tokens=2)
    message = str(info.value)
    assert KEY not in message
    return message


def test_endpoint_timeout(server: ChatServer, caplog):
    caplog.set_level(logging.DEBUG)
    server.script = ["sleep"]
    started = time.monotonic()
    message = failure(endpoint(server.url, api_key=KEY, timeout=0.3, retries=2))
    assert "did not answer within 0.3 s" in message and "FRAMESCOPE_VLM_TIMEOUT" in message
    assert time.monotonic() - started < 1.4  # not retried: a slow server stays slow
    assert KEY not in caplog.text


def test_endpoint_refuses_the_key(server: ChatServer, caplog):
    caplog.set_level(logging.DEBUG)
    server.script = [401]
    message = failure(endpoint(server.url, api_key=KEY, retries=2))
    assert "refused the key" in message and "HTTP 401" in message
    assert "***" in message  # the server echoed the key: it is redacted
    assert len(server.requests) == 1  # 4xx is not retried
    server.requests.clear()
    server.script = [403]
    assert "refused the key" in failure(endpoint(server.url, api_key=KEY))
    assert KEY not in caplog.text


def test_endpoint_server_error_is_retried_then_fails(server: ChatServer, caplog):
    caplog.set_level(logging.DEBUG)
    server.script = [500]
    message = failure(endpoint(server.url, api_key=KEY, retries=2))
    assert len(server.requests) == 3
    assert "failed after 3 attempt(s)" in message and "HTTP 500" in message
    assert KEY not in caplog.text


def test_endpoint_recovers_after_rate_limit(server: ChatServer):
    server.script = [429, 503, "ok"]
    text = endpoint(server.url, api_key=KEY, retries=2).answer(
        [VlmFrame(noise(7), 0.0)], "What?", max_new_tokens=2
    )
    assert isinstance(text, str) and len(server.requests) == 3


def test_endpoint_not_found_and_bad_request(server: ChatServer):
    server.script = [404]
    message = failure(endpoint(server.url, api_key=KEY, model="no-such-model"))
    assert "404" in message and "no-such-model" in message and "/v1" in message
    assert len(server.requests) == 1
    server.requests.clear()
    server.script = [400]
    assert "HTTP 400" in failure(endpoint(server.url, api_key=KEY, retries=3))
    assert len(server.requests) == 1


def test_endpoint_malformed_replies(server: ChatServer):
    server.script = ["malformed"]
    assert "not JSON" in failure(endpoint(server.url, api_key=KEY))
    server.script = ["no-choices"]
    assert "choices[0].message.content" in failure(endpoint(server.url, api_key=KEY))


def test_endpoint_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    message = failure(endpoint(f"http://127.0.0.1:{port}/v1", api_key=KEY, retries=1))
    assert "connection refused" in message and "failed after 2 attempt(s)" in message


def test_endpoint_rejects_a_bad_url():
    with pytest.raises(ConfigError):
        EndpointVlm("localhost:8000/v1")
    with pytest.raises(ConfigError):
        EndpointVlm("ftp://example.com/v1")


# -- choosing a backend ----------------------------------------------------------------------------


def test_load_vlm_picks_the_endpoint_when_a_base_url_is_set(tmp_path: Path):
    endpoint = replace(
        Settings().vlm_endpoint,
        base_url="http://127.0.0.1:9/v1",
        model="qwen2.5-vl",
        api_key=KEY,
        timeout=5.0,
        retries=1,
    )
    settings = Settings(home=tmp_path, profile="tiny", vlm_endpoint=endpoint)
    vlm = load_vlm(settings)
    assert isinstance(vlm, EndpointVlm)
    assert (vlm.model, vlm.timeout, vlm.retries) == ("qwen2.5-vl", 5.0, 1)
    assert KEY not in repr(vlm) and KEY not in repr(settings)
    assert not (tmp_path / "models").exists()  # no local model was built


def test_load_vlm_tiny_profile(smol: LocalVlm):
    assert smol.real_weights is False and smol.key.startswith("smolvlm/tiny/")
    assert type(smol.model).__name__ == "SmolVLMForConditionalGeneration"


def test_default_profile_offline_names_the_ways_out(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    settings = Settings(home=tmp_path, profile="default", device="cpu")
    cached = Path(constants.HF_HUB_CACHE) / f"models--{settings.vlm_model.replace('/', '--')}"
    if cached.exists():
        pytest.skip(f"{settings.vlm_model} is in the local Hugging Face cache")
    with pytest.raises(ModelUnavailable) as info:
        load_vlm(settings)
    message = str(info.value)
    assert settings.vlm_model in message
    assert "FRAMESCOPE_PROFILE=tiny" in message and "FRAMESCOPE_VLM_BASE_URL" in message

    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_vlm(Settings(home=tmp_path, profile="default", vlm_model=str(tmp_path / "nowhere")))


def test_feature_cache_falls_back_to_plain_answers(smol: LocalVlm, monkeypatch):
    vlm = LocalVlm(smol.model, smol.processor, key="k", name="n", device="cpu", real_weights=False)
    frames = video_frames(seed=9, n=2)
    expected = vlm.generate(vlm.prepare(frames, "What?"), max_new_tokens=5)

    def broken(inputs):
        raise RuntimeError("this family takes no pre-computed image features")

    monkeypatch.setattr(vlm, "_encode_features", broken)
    assert vlm.answer(frames, "What?", max_new_tokens=5) == expected
    assert vlm.last_usage["cached_frames"] is False and vlm._encoder is None
    assert not hasattr(vlm.processor, "_process_images") or "_process_images" not in vars(
        vlm.processor
    )
