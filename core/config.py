"""Settings from FRAMESCOPE_* environment variables, and the model profiles."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import AccessDenied, ConfigError
from core.types import Sampling

PROFILES = ("default", "tiny")
MODES = ("local", "shared")
DEVICES = ("auto", "cpu", "cuda", "mps")

# Every FRAMESCOPE_* variable: name -> (default shown to users, meaning). The README table and
# `framescope status` are made from this, so a new setting is documented where it is defined.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "FRAMESCOPE_HOME": (
        "~/.local/share/framescope",
        "data directory: library database, index, thumbnails, uploads, tiny models",
    ),
    "FRAMESCOPE_PROFILE": (
        "default",
        "`default` (real weights from the hub) or `tiny` (random-weight tiny models built offline)",
    ),
    "FRAMESCOPE_DEVICE": (
        "auto",
        "`auto` (CUDA, then Apple MPS, else CPU), `cpu`, `cuda` or `mps`",
    ),
    "FRAMESCOPE_MODE": (
        "local",
        "`local` (one user on 127.0.0.1) or `shared` (behind an authenticating proxy)",
    ),
    "FRAMESCOPE_ROOTS": ("(none)", "folders that may be indexed in shared mode, separated by `:`"),
    "FRAMESCOPE_CLIP_MODEL": ("ViT-B-32", "open_clip architecture name"),
    "FRAMESCOPE_CLIP_PRETRAINED": (
        "laion2b_s34b_b79k",
        "open_clip pretrained tag, or the path of a local weights file",
    ),
    "FRAMESCOPE_CAPTION_MODEL": (
        "Salesforce/blip-image-captioning-base",
        "BLIP captioning model: a hub id or a local folder",
    ),
    "FRAMESCOPE_VLM_MODEL": (
        "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
        "local vision-language model for video questions: a hub id or a local folder",
    ),
    "FRAMESCOPE_VLM_BASE_URL": (
        "(none)",
        "OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp, hosted) for the VLM; setting it selects that backend",
    ),
    "FRAMESCOPE_VLM_ENDPOINT_MODEL": ("(none)", "model name sent to the VLM endpoint"),
    "FRAMESCOPE_VLM_API_KEY": (
        "(none)",
        "key for the VLM endpoint (sent as a bearer token; never shown)",
    ),
    "FRAMESCOPE_VLM_TIMEOUT": ("120", "seconds to wait for the VLM endpoint"),
    "FRAMESCOPE_VLM_MAX_TOKENS": ("256", "longest answer, in tokens"),
    "FRAMESCOPE_VLM_RETRIES": (
        "2",
        "retries on connection errors, 429 and 5xx from the VLM endpoint",
    ),
    "FRAMESCOPE_LLM_MODEL": (
        "Qwen/Qwen2.5-1.5B-Instruct",
        "local text model that reconciles chunk descriptions into summaries: a hub id or a local folder",
    ),
    "FRAMESCOPE_LLM_BASE_URL": (
        "(none)",
        "OpenAI-compatible endpoint for the text model; setting it selects that backend",
    ),
    "FRAMESCOPE_LLM_MODEL_NAME": (
        "(none)",
        "model name sent to the text-model endpoint (default: FRAMESCOPE_LLM_MODEL)",
    ),
    "FRAMESCOPE_LLM_API_KEY": ("(none)", "key for the text-model endpoint (never shown)"),
    "FRAMESCOPE_FETCH_HOSTS": (
        "(any public host)",
        "hosts videos may be fetched from, comma separated (their subdomains too); set it in shared deployments",
    ),
    "FRAMESCOPE_FETCH_MAX_MB": ("2048", "largest download, in MB (stopped while downloading)"),
    "FRAMESCOPE_FETCH_MAX_MINUTES": ("240", "longest video fetched, in minutes"),
    "FRAMESCOPE_FETCH_MAX_HEIGHT": ("720", "highest video resolution fetched (lines)"),
    "FRAMESCOPE_FETCH_TIMEOUT": ("60", "seconds per network operation when fetching"),
    "FRAMESCOPE_FETCH_ALLOW_LOOPBACK": (
        "0",
        "tests only: 1 lets fetching reach 127.0.0.1 and ::1 (never private networks)",
    ),
    "FRAMESCOPE_BATCH_SIZE": ("16", "images per CLIP forward pass when indexing"),
    "FRAMESCOPE_MAX_IMAGE_MB": ("50", "largest image file accepted, in MB"),
    "FRAMESCOPE_MAX_IMAGE_PIXELS": (
        "100000000",
        "largest image accepted, in pixels (guards against decompression bombs)",
    ),
    "FRAMESCOPE_FRAME_EVERY": ("1.0", "seconds between sampled video frames"),
    "FRAMESCOPE_MAX_FRAMES": (
        "7200",
        "most frames sampled from one video (longer videos get an evenly wider interval)",
    ),
    "FRAMESCOPE_DEDUP": (
        "0.95",
        "a video frame whose CLIP cosine to the last kept frame is at least this is dropped (1 keeps all)",
    ),
    "FRAMESCOPE_MAX_VIDEO_MINUTES": ("240", "longest video accepted, in minutes"),
    "FRAMESCOPE_MAX_VIDEO_PIXELS": (
        "8294400",
        "largest video frame accepted, in pixels (3840x2160)",
    ),
    "FRAMESCOPE_MAX_VIDEO_MB": ("20480", "largest video file accepted, in MB"),
    "FRAMESCOPE_EXACT_SEARCH_LIMIT": (
        "50000",
        "vectors up to which search is exact; above it an IVF index is built and tuned",
    ),
}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _int_env(name: str, default: int, minimum: int = 1) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _float_env(name: str, default: float, minimum: float, maximum: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value:g} must be between {minimum:g} and {maximum:g}")
    return value


def _choice_env(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_env(name) or default).lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value


def default_home() -> Path:
    base = _env("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framescope"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once from the environment (`Settings.from_env()`)."""

    home: Path = field(default_factory=default_home)
    profile: str = "default"
    device: str = "auto"
    mode: str = "local"
    roots: tuple[Path, ...] = ()
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"
    caption_model: str = "Salesforce/blip-image-captioning-base"
    vlm_model: str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    vlm_base_url: str | None = None
    vlm_model_name: str | None = None
    vlm_api_key: str | None = field(default=None, repr=False)  # never printed
    vlm_timeout: float = 120.0
    vlm_max_tokens: int = 256
    vlm_retries: int = 2
    llm_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    llm_base_url: str | None = None
    llm_model_name: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)  # never printed
    fetch_allowed_hosts: tuple[str, ...] = ()
    fetch_max_mb: float = 2048.0
    fetch_max_minutes: float = 240.0
    fetch_max_height: int = 720
    fetch_timeout: float = 60.0
    fetch_allow_loopback: bool = False  # tests only
    batch_size: int = 16
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000
    exact_search_limit: int = 50_000
    frame_every: float = 1.0
    max_frames: int = 7200
    dedup_threshold: float = 0.95
    max_video_seconds: float = 240 * 60
    max_video_pixels: int = 3840 * 2160
    max_video_bytes: int = 20480 * 1024 * 1024

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        home = _env("FRAMESCOPE_HOME")
        roots = tuple(
            Path(p).expanduser().resolve()
            for p in (_env("FRAMESCOPE_ROOTS") or "").split(os.pathsep)
            if p.strip()
        )
        settings = cls(
            home=Path(home).expanduser().resolve() if home else default_home(),
            profile=_choice_env("FRAMESCOPE_PROFILE", "default", PROFILES),
            device=_choice_env("FRAMESCOPE_DEVICE", "auto", DEVICES),
            mode=_choice_env("FRAMESCOPE_MODE", "local", MODES),
            roots=roots,
            clip_model=_env("FRAMESCOPE_CLIP_MODEL") or "ViT-B-32",
            clip_pretrained=_env("FRAMESCOPE_CLIP_PRETRAINED") or "laion2b_s34b_b79k",
            caption_model=_env("FRAMESCOPE_CAPTION_MODEL")
            or "Salesforce/blip-image-captioning-base",
            batch_size=_int_env("FRAMESCOPE_BATCH_SIZE", 16),
            max_image_bytes=_int_env("FRAMESCOPE_MAX_IMAGE_MB", 50) * 1024 * 1024,
            max_image_pixels=_int_env("FRAMESCOPE_MAX_IMAGE_PIXELS", 100_000_000),
            exact_search_limit=_int_env("FRAMESCOPE_EXACT_SEARCH_LIMIT", 50_000),
            frame_every=_float_env("FRAMESCOPE_FRAME_EVERY", 1.0, 0.05, 3600),
            max_frames=_int_env("FRAMESCOPE_MAX_FRAMES", 7200),
            dedup_threshold=_float_env("FRAMESCOPE_DEDUP", 0.95, 0.0, 1.0),
            max_video_seconds=_int_env("FRAMESCOPE_MAX_VIDEO_MINUTES", 240) * 60.0,
            max_video_pixels=_int_env("FRAMESCOPE_MAX_VIDEO_PIXELS", 3840 * 2160),
            max_video_bytes=_int_env("FRAMESCOPE_MAX_VIDEO_MB", 20480) * 1024 * 1024,
            vlm_model=_env("FRAMESCOPE_VLM_MODEL") or "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
            vlm_base_url=_env("FRAMESCOPE_VLM_BASE_URL"),
            vlm_model_name=_env("FRAMESCOPE_VLM_ENDPOINT_MODEL"),
            vlm_api_key=_env("FRAMESCOPE_VLM_API_KEY"),
            vlm_timeout=_float_env("FRAMESCOPE_VLM_TIMEOUT", 120.0, 1.0, 3600.0),
            vlm_max_tokens=_int_env("FRAMESCOPE_VLM_MAX_TOKENS", 256),
            vlm_retries=_int_env("FRAMESCOPE_VLM_RETRIES", 2, minimum=0),
            llm_model=_env("FRAMESCOPE_LLM_MODEL") or "Qwen/Qwen2.5-1.5B-Instruct",
            llm_base_url=_env("FRAMESCOPE_LLM_BASE_URL"),
            llm_model_name=_env("FRAMESCOPE_LLM_MODEL_NAME"),
            llm_api_key=_env("FRAMESCOPE_LLM_API_KEY"),
            fetch_allowed_hosts=tuple(
                h.strip().lower()
                for h in (_env("FRAMESCOPE_FETCH_HOSTS") or "").split(",")
                if h.strip()
            ),
            fetch_max_mb=_float_env("FRAMESCOPE_FETCH_MAX_MB", 2048.0, 1.0, 1e7),
            fetch_max_minutes=_float_env("FRAMESCOPE_FETCH_MAX_MINUTES", 240.0, 0.1, 1e5),
            fetch_max_height=_int_env("FRAMESCOPE_FETCH_MAX_HEIGHT", 720, minimum=144),
            fetch_timeout=_float_env("FRAMESCOPE_FETCH_TIMEOUT", 60.0, 1.0, 3600.0),
            fetch_allow_loopback=_env("FRAMESCOPE_FETCH_ALLOW_LOOPBACK") == "1",
        )
        return settings.with_overrides(**overrides) if overrides else settings

    def with_overrides(self, **overrides: object) -> Settings:
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "profile" in clean and clean["profile"] not in PROFILES:
            raise ConfigError(f"profile {clean['profile']!r} must be one of: {', '.join(PROFILES)}")
        if "home" in clean:
            clean["home"] = Path(str(clean["home"])).expanduser().resolve()
        return replace(self, **clean)

    @property
    def sampling(self) -> Sampling:
        """The default video sampling."""
        return Sampling(
            every=self.frame_every, max_frames=self.max_frames, dedup=self.dedup_threshold
        )

    @property
    def model_cache(self) -> Path:
        """Where the tiny profile's offline models are built and kept."""
        return self.home / "models"

    def check_folder_allowed(self, folder: Path) -> None:
        """In shared mode only folders under FRAMESCOPE_ROOTS may be indexed."""
        if self.mode != "shared":
            return
        real = folder.expanduser().resolve()
        if not any(real.is_relative_to(root) for root in self.roots):
            allowed = ", ".join(str(r) for r in self.roots) or "none are configured"
            raise AccessDenied(
                f"{folder}: this shared deployment only indexes folders under "
                f"FRAMESCOPE_ROOTS ({allowed})"
            )
