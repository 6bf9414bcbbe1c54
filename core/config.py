"""Settings from FRAMESCOPE_* environment variables, each declared once, and the model profiles.

Every setting is one `Setting` in `SETTINGS`: its environment name, where it lands in `Settings`,
its default as users read it, how its text is parsed, and what it means. `Settings.from_env`, the
Home page's settings table, `framescope status` and the README table are all made from that list,
and the dataclass defaults are the parsed defaults, so a value is never written twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import AccessDenied, ConfigError
from core.types import Sampling

PROFILES = ("default", "tiny")
MODES = ("local", "shared")
DEVICES = ("auto", "cpu", "cuda", "mps")
MB = 1024 * 1024
NONE_SHOWN = "(none)"

Parser = Callable[[str, str], object]  # (environment name, raw text) -> value; raises ConfigError


# -- parsers ---------------------------------------------------------------------------------------


def whole(minimum: int = 1, scale: int = 1) -> Parser:
    """A whole number of at least `minimum`, times `scale` (e.g. MB -> bytes)."""

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} must be at least {minimum}")
        return value * scale

    return parse


def number(minimum: float, maximum: float, scale: float = 1.0) -> Parser:
    """A number between `minimum` and `maximum`, times `scale` (e.g. minutes -> seconds)."""

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}={value:g} must be between {minimum:g} and {maximum:g}")
        return value * scale

    return parse


def choice(*options: str) -> Parser:
    """One of `options`, case-insensitive."""

    def parse(name: str, raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ConfigError(f"{name}={value!r} must be one of: {', '.join(options)}")
        return value

    return parse


def text(name: str, raw: str) -> str:
    return raw


def folder(name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def folders(name: str, raw: str) -> tuple[Path, ...]:
    """Folders separated by the system's path separator (`:`)."""
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())


def hosts(name: str, raw: str) -> tuple[str, ...]:
    """Host names separated by commas (checked as host names when a link is fetched)."""
    return tuple(h.strip().lower() for h in raw.split(",") if h.strip())


def flag(name: str, raw: str) -> bool:
    """Only `1` turns a flag on: a stray `0`, `no` or `false` must not."""
    return raw.strip() == "1"


# -- declarations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One FRAMESCOPE_* variable: where it goes, its default as shown, its parser and meaning.

    `field` is the attribute of `Settings` it sets, dotted for a group (`video.max_bytes`). The
    default value is `parse(shown)`, or None when `shown` is a placeholder in parentheses.
    """

    env: str
    field: str
    shown: str
    parse: Parser
    meaning: str
    group: str = "general"

    @property
    def default(self) -> object:
        if self.shown.startswith("("):
            return None
        return self.parse(self.env, self.shown)


SETTINGS: tuple[Setting, ...] = (
    Setting("FRAMESCOPE_HOME", "home", "~/.local/share/framescope", folder,
            "data directory: library database, index, thumbnails, uploads, tiny models"),
    Setting("FRAMESCOPE_PROFILE", "profile", "default", choice(*PROFILES),
            "`default` (real weights from the hub) or `tiny` (random-weight tiny models built offline)"),
    Setting("FRAMESCOPE_DEVICE", "device", "auto", choice(*DEVICES),
            "`auto` (CUDA, then Apple MPS, else CPU), `cpu`, `cuda` or `mps`"),
    Setting("FRAMESCOPE_MODE", "mode", "local", choice(*MODES),
            "`local` (one user on 127.0.0.1) or `shared` (behind an authenticating proxy)"),
    Setting("FRAMESCOPE_ROOTS", "roots", NONE_SHOWN, folders,
            "folders that may be indexed in shared mode, separated by `:`"),
    Setting("FRAMESCOPE_USER_HEADER", "user_header", "X-Forwarded-User", text,
            "shared mode: the request header in which the authenticating proxy names the user (no header, no access)"),
    Setting("FRAMESCOPE_USER_UPLOAD_MB", "user_upload_bytes", "2048", whole(scale=MB),
            "shared mode: how much each user may upload in all, in MB"),
    Setting("FRAMESCOPE_USER_JOBS", "user_jobs", "1", whole(),
            "shared mode: long jobs (indexing, captions, summaries) one user may run at once"),
    Setting("FRAMESCOPE_CLIP_MODEL", "clip_model", "ViT-B-32", text, "open_clip architecture name",
            "models"),
    Setting("FRAMESCOPE_CLIP_PRETRAINED", "clip_pretrained", "laion2b_s34b_b79k", text,
            "open_clip pretrained tag, a local weights file, or `hf-hub:org/name`", "models"),
    Setting("FRAMESCOPE_CAPTION_MODEL", "caption_model", "Salesforce/blip-image-captioning-base",
            text, "BLIP captioning model: a hub id or a local folder", "models"),
    Setting("FRAMESCOPE_VLM_MODEL", "vlm_model", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct", text,
            "local vision-language model for video questions: a hub id or a local folder",
            "models"),
    Setting("FRAMESCOPE_VLM_MAX_TOKENS", "vlm_max_tokens", "256", whole(),
            "longest answer, in tokens", "models"),
    Setting("FRAMESCOPE_LLM_MODEL", "llm_model", "Qwen/Qwen2.5-1.5B-Instruct", text,
            "local text model that reconciles chunk descriptions into summaries: a hub id or a local folder",
            "models"),
    Setting("FRAMESCOPE_VLM_BASE_URL", "vlm_endpoint.base_url", NONE_SHOWN, text,
            "OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp, hosted) for the VLM; setting it selects that backend",
            "VLM endpoint"),
    Setting("FRAMESCOPE_VLM_ENDPOINT_MODEL", "vlm_endpoint.model", NONE_SHOWN, text,
            "model name sent to the VLM endpoint", "VLM endpoint"),
    Setting("FRAMESCOPE_VLM_API_KEY", "vlm_endpoint.api_key", NONE_SHOWN, text,
            "key for the VLM endpoint (sent as a bearer token; never shown)", "VLM endpoint"),
    Setting("FRAMESCOPE_VLM_TIMEOUT", "vlm_endpoint.timeout", "120", number(1.0, 3600.0),
            "seconds to wait for the VLM endpoint", "VLM endpoint"),
    Setting("FRAMESCOPE_VLM_RETRIES", "vlm_endpoint.retries", "2", whole(minimum=0),
            "retries on connection errors, 429 and 5xx from the VLM endpoint", "VLM endpoint"),
    Setting("FRAMESCOPE_LLM_BASE_URL", "llm_endpoint.base_url", NONE_SHOWN, text,
            "OpenAI-compatible endpoint for the text model; setting it selects that backend",
            "LLM endpoint"),
    Setting("FRAMESCOPE_LLM_MODEL_NAME", "llm_endpoint.model", NONE_SHOWN, text,
            "model name sent to the text-model endpoint (default: FRAMESCOPE_LLM_MODEL)",
            "LLM endpoint"),
    Setting("FRAMESCOPE_LLM_API_KEY", "llm_endpoint.api_key", NONE_SHOWN, text,
            "key for the text-model endpoint (never shown)", "LLM endpoint"),
    Setting("FRAMESCOPE_LLM_TIMEOUT", "llm_endpoint.timeout", "120", number(1.0, 3600.0),
            "seconds to wait for the text-model endpoint", "LLM endpoint"),
    Setting("FRAMESCOPE_LLM_RETRIES", "llm_endpoint.retries", "2", whole(minimum=0),
            "retries on connection errors, 429 and 5xx from the text-model endpoint",
            "LLM endpoint"),
    Setting("FRAMESCOPE_FETCH_HOSTS", "fetch.allowed_hosts", "(any public host)", hosts,
            "hosts videos may be fetched from, comma separated (their subdomains too); set it in shared deployments",
            "fetching"),
    Setting("FRAMESCOPE_FETCH_MAX_MB", "fetch.max_bytes", "2048", number(1.0, 1e7, MB),
            "largest download, in MB (stopped while downloading)", "fetching"),
    Setting("FRAMESCOPE_FETCH_MAX_MINUTES", "fetch.max_seconds", "240", number(0.1, 1e5, 60.0),
            "longest video fetched, in minutes", "fetching"),
    Setting("FRAMESCOPE_FETCH_MAX_HEIGHT", "fetch.max_height", "720", whole(minimum=144),
            "highest video resolution fetched (lines)", "fetching"),
    Setting("FRAMESCOPE_FETCH_TIMEOUT", "fetch.timeout", "60", number(1.0, 3600.0),
            "seconds per network operation when fetching", "fetching"),
    Setting("FRAMESCOPE_FETCH_MAX_ITEMS", "fetch.max_items", "25", whole(),
            "most videos taken from one playlist or channel link (the first ones it lists)",
            "fetching"),
    Setting("FRAMESCOPE_FETCH_ALLOW_LOOPBACK", "fetch.allow_loopback", "0", flag,
            "tests only: 1 lets fetching reach 127.0.0.1 and ::1 (never private networks)",
            "fetching"),
    Setting("FRAMESCOPE_BATCH_SIZE", "batch_size", "16", whole(),
            "images per CLIP forward pass when indexing", "indexing"),
    Setting("FRAMESCOPE_MAX_IMAGE_MB", "max_image_bytes", "50", whole(scale=MB),
            "largest image file accepted, in MB", "indexing"),
    Setting("FRAMESCOPE_MAX_IMAGE_PIXELS", "max_image_pixels", "100000000", whole(),
            "largest image accepted, in pixels (guards against decompression bombs)", "indexing"),
    Setting("FRAMESCOPE_FRAME_EVERY", "frame_every", "1.0", number(0.05, 3600),
            "seconds between sampled video frames", "indexing"),
    Setting("FRAMESCOPE_MAX_FRAMES", "max_frames", "7200", whole(),
            "most frames sampled from one video (longer videos get an evenly wider interval)",
            "indexing"),
    Setting("FRAMESCOPE_DEDUP", "dedup_threshold", "0.95", number(0.0, 1.0),
            "a video frame whose CLIP cosine to the last kept frame is at least this is dropped (1 keeps all)",
            "indexing"),
    Setting("FRAMESCOPE_MAX_VIDEO_MINUTES", "video.max_duration_s", "240", whole(scale=60),
            "longest video accepted, in minutes", "video limits"),
    Setting("FRAMESCOPE_MAX_VIDEO_PIXELS", "video.max_pixels", "8294400", whole(),
            "largest video frame accepted, in pixels (3840x2160)", "video limits"),
    Setting("FRAMESCOPE_MAX_VIDEO_MB", "video.max_bytes", "20480", whole(scale=MB),
            "largest video file accepted, in MB", "video limits"),
    Setting("FRAMESCOPE_EXACT_SEARCH_LIMIT", "exact_search_limit", "50000", whole(),
            "vectors up to which search is exact; above it an IVF index is built and tuned",
            "search"),
)  # fmt: skip

_BY_FIELD = {s.field: s for s in SETTINGS}

# name -> (default shown to users, meaning): the README table and the Home page are made from this.
ENVIRONMENT: dict[str, tuple[str, str]] = {s.env: (s.shown, s.meaning) for s in SETTINGS}


def _default(name: str):
    """The dataclass default of a declared field: its parsed default, made once per instance."""
    setting = _BY_FIELD[name]
    return field(default_factory=lambda: setting.default)


# -- groups ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoLimits:
    """Videos over any of these are refused before decoding."""

    max_duration_s: float = _default("video.max_duration_s")
    max_pixels: int = _default("video.max_pixels")  # width*height of a frame
    max_bytes: int = _default("video.max_bytes")


@dataclass(frozen=True)
class FetchSettings:
    """What may be fetched from web links, and how much."""

    allowed_hosts: tuple[str, ...] = ()  # empty: any public host
    max_bytes: float = _default("fetch.max_bytes")
    max_seconds: float = _default("fetch.max_seconds")
    max_height: int = _default("fetch.max_height")
    timeout: float = _default("fetch.timeout")
    max_items: int = _default("fetch.max_items")  # videos taken from one playlist or channel
    allow_loopback: bool = _default("fetch.allow_loopback")  # tests only


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible chat endpoint, and the settings prefix its messages name.

    `env` is the prefix of its variables (FRAMESCOPE_VLM or FRAMESCOPE_LLM), so that an error from
    the text-model endpoint tells the user to check FRAMESCOPE_LLM_*, not the VLM's settings.
    """

    env: str
    model_env: str  # the variable that names the model sent to it
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed
    timeout: float = 120.0
    retries: int = 2

    def variable(self, suffix: str) -> str:
        """The environment name of one of its settings: variable("API_KEY")."""
        return f"{self.env}_{suffix}"


def _endpoint(env: str, model_env: str) -> Callable[[], Endpoint]:
    """The default Endpoint of a role, its timeout and retries from the role's own declarations."""

    def make() -> Endpoint:
        role = "vlm" if env.endswith("VLM") else "llm"
        timeout = _BY_FIELD[f"{role}_endpoint.timeout"].default
        return Endpoint(
            env, model_env, timeout=timeout, retries=_BY_FIELD[f"{role}_endpoint.retries"].default
        )

    return make


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framescope"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once from the environment (`Settings.from_env()`)."""

    home: Path = field(default_factory=default_home)
    profile: str = _default("profile")
    device: str = _default("device")
    mode: str = _default("mode")
    roots: tuple[Path, ...] = ()
    user_header: str = _default("user_header")
    user_upload_bytes: int = _default("user_upload_bytes")
    user_jobs: int = _default("user_jobs")
    clip_model: str = _default("clip_model")
    clip_pretrained: str = _default("clip_pretrained")
    caption_model: str = _default("caption_model")
    vlm_model: str = _default("vlm_model")
    vlm_max_tokens: int = _default("vlm_max_tokens")
    llm_model: str = _default("llm_model")
    batch_size: int = _default("batch_size")
    max_image_bytes: int = _default("max_image_bytes")
    max_image_pixels: int = _default("max_image_pixels")
    exact_search_limit: int = _default("exact_search_limit")
    frame_every: float = _default("frame_every")
    max_frames: int = _default("max_frames")
    dedup_threshold: float = _default("dedup_threshold")
    video: VideoLimits = field(default_factory=VideoLimits)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    vlm_endpoint: Endpoint = field(
        default_factory=_endpoint("FRAMESCOPE_VLM", "FRAMESCOPE_VLM_ENDPOINT_MODEL")
    )
    llm_endpoint: Endpoint = field(
        default_factory=_endpoint("FRAMESCOPE_LLM", "FRAMESCOPE_LLM_MODEL_NAME")
    )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from FRAMESCOPE_* variables (empty means unset); `overrides` win (None: not given).

        Raises:
            ConfigError: a variable's value is invalid; the message names it.
        """
        top: dict[str, object] = {}
        groups: dict[str, dict[str, object]] = {}
        for setting in SETTINGS:
            raw = os.environ.get(setting.env, "")
            if raw == "":
                continue
            value = setting.parse(setting.env, raw)
            group, _, name = setting.field.rpartition(".")
            (groups.setdefault(group, {}) if group else top)[name] = value
        settings = cls(**top)
        if groups:
            settings = replace(
                settings,
                **{g: replace(getattr(settings, g), **values) for g, values in groups.items()},
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


def shown_value(setting: Setting, mode: str) -> str:
    """A setting's value as the app may show it: keys never, endpoint URLs not in shared mode."""
    value = os.environ.get(setting.env, "")
    if not value:
        return f"(default: {setting.shown})"
    if setting.env.endswith("_API_KEY") or (mode == "shared" and setting.env.endswith("_BASE_URL")):
        return "(set, hidden)"
    return value


def environment_table() -> str:
    """The FRAMESCOPE_* settings as a Markdown table (kept in the README)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.env}` | `{s.shown}` | {s.meaning} |" for s in SETTINGS]
    return "\n".join(rows)
