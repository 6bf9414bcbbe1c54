"""The models behind each role, and what the app and `framescope status` say about them.

Modules:
    base      where weights come from, load-or-explain, device, ModelInfo, the TextModel and
              VisionLanguageModel protocols the pipelines are written against
    clip      image-text embeddings (open_clip)
    captioner frame captions (BLIP)
    chat      what a question to a VLM is made of (frames, turns), shared by both VLM backends
    vlm       local vision-language models (transformers) and `load_vlm`
    llm       the local text model and `load_llm`
    endpoint  the one OpenAI-compatible chat client, and the VLM and text model behind it
    tiny      the tiny random-weight models built offline (the `tiny` profile)

Importing this package loads no model library: each loader imports what it needs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from core.config import Endpoint, Settings
from core.models.base import (
    ENDPOINT,
    REAL,
    TINY,
    ModelInfo,
    TextModel,
    VisionLanguageModel,
    WeightsSource,
    load_or_explain,
    resolve_device,
    ways_out,
    weights_source,
)

__all__ = [
    "CAPTIONER",
    "EMBEDDINGS",
    "ENDPOINT",
    "LLM",
    "REAL",
    "TINY",
    "VLM",
    "ModelInfo",
    "TextModel",
    "VisionLanguageModel",
    "WeightsSource",
    "describe_loaded",
    "load_or_explain",
    "planned_models",
    "resolve_device",
    "ways_out",
    "weights_source",
]

EMBEDDINGS = "image-text embeddings (CLIP)"
CAPTIONER = "captioner (BLIP)"
VLM = "vision-language model"
LLM = "text model"


def _endpoint_name(endpoint: Endpoint, fallback_model: str | None = None) -> str:
    host = urlsplit(endpoint.base_url or "").hostname or "?"
    port = urlsplit(endpoint.base_url or "").port
    return f"{endpoint.model or fallback_model or 'endpoint model'} @ {host}" + (
        f":{port}" if port else ""
    )


def planned_models(settings: Settings) -> list[ModelInfo]:
    """Each role's model as the settings choose it, without loading anything (keys are known once
    a model is loaded: see `describe_loaded`)."""
    device = resolve_device(settings.device)
    tiny = settings.profile == "tiny"
    weights = TINY if tiny else REAL

    def local(role: str, tiny_name: str, name: str) -> ModelInfo:
        return ModelInfo(role, tiny_name if tiny else name, "", device, weights)

    def chat(role: str, endpoint: Endpoint, tiny_name: str, name: str) -> ModelInfo:
        if endpoint.base_url:
            fallback = settings.llm_model if role == LLM else None
            return ModelInfo(role, _endpoint_name(endpoint, fallback), "", "endpoint", ENDPOINT)
        return local(role, tiny_name, name)

    return [
        local(
            EMBEDDINGS,
            "framescope-tiny-clip",
            f"{settings.clip_model} / {settings.clip_pretrained}",
        ),
        local(CAPTIONER, "framescope-tiny-blip", settings.caption_model),
        chat(VLM, settings.vlm_endpoint, "framescope-tiny-smolvlm2", settings.vlm_model),
        chat(LLM, settings.llm_endpoint, "framescope-tiny-llm", settings.llm_model),
    ]


def describe_loaded(role: str, model: object) -> ModelInfo:
    """What a loaded model of a role is: its name, key, device and weights."""
    if hasattr(model, "client"):  # behind an OpenAI-compatible endpoint
        return ModelInfo(role, model.name, model.key, "endpoint", ENDPOINT)
    return ModelInfo(
        role, model.name, model.key, model.device, REAL if model.real_weights else TINY
    )
