"""One model-loading path: where weights come from, the shared model description, and each
OpenAI-compatible endpoint speaking for its own settings (FRAMESCOPE_VLM_* or FRAMESCOPE_LLM_*)."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.config import SETTINGS, Settings
from core.errors import ModelUnavailable
from core.models import (
    CAPTIONER,
    EMBEDDINGS,
    ENDPOINT,
    LLM,
    TINY,
    VLM,
    describe_loaded,
    planned_models,
    weights_source,
)
from core.models.base import HUB, LOCAL_DIR, LOCAL_FILE, TAG
from core.models.endpoint import EndpointLlm
from core.models.llm import load_llm

# -- where weights come from -------------------------------------------------------------------


def test_weights_source_kinds(tmp_path: Path):
    folder = tmp_path / "blip"
    folder.mkdir()
    weights = tmp_path / "clip.safetensors"
    weights.write_bytes(b"x")
    assert weights_source("Salesforce/blip-image-captioning-base", "S").kind == HUB
    assert weights_source("hf-hub:timm/ViT-B-16-SigLIP", "S") == (
        weights_source("timm/ViT-B-16-SigLIP", "S")
    )
    assert weights_source(str(folder), "S").kind == LOCAL_DIR
    assert weights_source(f"local-dir:{folder}", "S").location == str(folder.resolve())
    assert weights_source(str(weights), "S").kind == LOCAL_FILE
    assert weights_source("laion2b_s34b_b79k", "S", tags=True).kind == TAG
    assert weights_source("laion2b_s34b_b79k", "S").kind == HUB  # no tags for this loader


@pytest.mark.parametrize("value", ["./missing", "/no/such/folder", "~/nope", "w.pt", "local-dir:x"])
def test_a_missing_local_path_names_the_setting_and_the_ways_out(value):
    with pytest.raises(ModelUnavailable) as info:
        weights_source(value, "FRAMESCOPE_CAPTION_MODEL")
    message = str(info.value)
    assert "FRAMESCOPE_CAPTION_MODEL" in message and "does not exist" in message
    assert "tiny" in message and "connect" in message


# -- settings declared once ----------------------------------------------------------------------


def test_the_dataclass_defaults_are_the_declared_defaults(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("FRAMESCOPE_"):
            monkeypatch.delenv(name)
    assert Settings.from_env(home=tmp_path) == Settings(home=tmp_path.resolve())
    s = Settings()
    for setting in SETTINGS:
        if setting.default is None or setting.env == "FRAMESCOPE_HOME":
            continue
        group, _, name = setting.field.rpartition(".")
        value = getattr(getattr(s, group) if group else s, name)
        assert value == setting.default, setting.env


def test_a_setting_lands_in_its_group(monkeypatch):
    monkeypatch.setenv("FRAMESCOPE_MAX_VIDEO_MINUTES", "3")
    monkeypatch.setenv("FRAMESCOPE_LLM_TIMEOUT", "7")
    monkeypatch.setenv("FRAMESCOPE_LLM_RETRIES", "0")
    s = Settings.from_env()
    assert s.video.max_duration_s == 180
    assert (s.llm_endpoint.timeout, s.llm_endpoint.retries) == (7.0, 0)
    assert (s.vlm_endpoint.timeout, s.vlm_endpoint.retries) == (120.0, 2)


# -- the shared model description ----------------------------------------------------------------


def test_planned_models_name_every_role_without_loading(tmp_path):
    tiny = planned_models(Settings(home=tmp_path, profile="tiny", device="cpu"))
    assert [m.role for m in tiny] == [EMBEDDINGS, CAPTIONER, VLM, LLM]
    assert {m.weights for m in tiny} == {TINY}
    assert not (tmp_path / "models").exists()
    served = Settings(
        home=tmp_path,
        llm_endpoint=replace(Settings().llm_endpoint, base_url="http://127.0.0.1:9/v1"),
    )
    llm = planned_models(served)[3]
    assert (llm.weights, llm.device) == (ENDPOINT, "endpoint")
    assert llm.name == "Qwen/Qwen2.5-1.5B-Instruct @ 127.0.0.1:9"


def test_describe_loaded(embedder):
    info = describe_loaded(EMBEDDINGS, embedder)
    assert (info.name, info.key, info.weights) == (embedder.name, embedder.key, TINY)


# -- the text model's endpoint has its own settings --------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    behaviour = "401"
    requests = 0

    def do_POST(self):
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.behaviour == "slow":
            time.sleep(3)
        status = 401 if self.behaviour == "401" else 503
        body = b'{"error": {"message": "no"}}'
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def llm_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.requests = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _llm(url: str, **endpoint) -> EndpointLlm:
    settings = Settings(
        home=Path("/nonexistent"),
        # the VLM's settings differ from the LLM's everywhere, so a mix-up shows
        vlm_endpoint=replace(Settings().vlm_endpoint, timeout=600.0, retries=5),
        llm_endpoint=replace(
            Settings().llm_endpoint, base_url=url, model="m", api_key="sk-x", **endpoint
        ),
    )
    llm = load_llm(settings)
    assert isinstance(llm, EndpointLlm)
    return llm


def test_a_refused_key_names_the_llm_settings(llm_server):
    _Handler.behaviour = "401"
    with pytest.raises(ModelUnavailable) as info:
        _llm(llm_server).complete("system", "user")
    message = str(info.value)
    assert "FRAMESCOPE_LLM_API_KEY" in message and "text-model endpoint" in message
    assert "FRAMESCOPE_VLM" not in message


def test_the_llm_endpoint_uses_its_own_timeout(llm_server):
    _Handler.behaviour = "slow"
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as info:
        _llm(llm_server, timeout=1.0).complete("system", "user")
    assert time.monotonic() - started < 2.5  # its own 1 s, not the VLM's 600 s
    assert "FRAMESCOPE_LLM_TIMEOUT" in str(info.value)
    assert "FRAMESCOPE_VLM" not in str(info.value)


def test_the_llm_endpoint_uses_its_own_retries(llm_server):
    _Handler.behaviour = "503"
    with pytest.raises(ModelUnavailable) as info:
        _llm(llm_server, retries=1).complete("system", "user")
    assert _Handler.requests == 2  # one try and its own one retry, not the VLM's five
    message = str(info.value)
    assert "2 attempt(s)" in message and "FRAMESCOPE_LLM_BASE_URL" in message
    assert "FRAMESCOPE_VLM" not in message


def test_an_unreachable_llm_endpoint_names_its_base_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ModelUnavailable) as info:
        _llm(f"http://127.0.0.1:{port}/v1", retries=0).complete("system", "user")
    assert "connection refused" in str(info.value)
    assert "FRAMESCOPE_LLM_BASE_URL" in str(info.value)
