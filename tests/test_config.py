"""Settings from FRAMESCOPE_* variables, and the shared-mode folder rule (FRAMESCOPE_ROOTS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import copy_images, row_counts, small_images

from core.config import ENVIRONMENT, Settings
from core.errors import AccessDenied, ConfigError
from core.indexing import Indexer
from core.library import Library


@pytest.fixture
def env(monkeypatch):
    """A clean FRAMESCOPE_* environment; returns a setter."""
    for name in list(os.environ):
        if name.startswith("FRAMESCOPE_"):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


# -- parsing ---------------------------------------------------------------------------------------


def test_defaults(env, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = Settings.from_env()
    assert s.home == tmp_path / "xdg" / "framescope"
    assert (s.profile, s.device, s.mode, s.roots) == ("default", "auto", "local", ())
    assert s.batch_size == 16
    assert s.max_image_bytes == 50 * 1024 * 1024
    assert s.max_image_pixels == 100_000_000
    assert s.exact_search_limit == 50_000
    assert s.model_cache == s.home / "models"


def test_values_are_read(env, tmp_path):
    env(
        FRAMESCOPE_HOME=str(tmp_path / "data"),
        FRAMESCOPE_PROFILE="TINY",
        FRAMESCOPE_DEVICE="cpu",
        FRAMESCOPE_MODE="Shared",
        FRAMESCOPE_ROOTS=f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}{os.pathsep}",
        FRAMESCOPE_BATCH_SIZE="4",
        FRAMESCOPE_MAX_IMAGE_MB="3",
        FRAMESCOPE_MAX_IMAGE_PIXELS="1000",
        FRAMESCOPE_EXACT_SEARCH_LIMIT="123",
        FRAMESCOPE_CLIP_MODEL="ViT-L-14",
        FRAMESCOPE_CLIP_PRETRAINED="openai",
    )
    s = Settings.from_env()
    assert s.home == (tmp_path / "data").resolve()
    assert (s.profile, s.device, s.mode) == ("tiny", "cpu", "shared")
    assert s.roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert s.batch_size == 4
    assert s.max_image_bytes == 3 * 1024 * 1024
    assert s.max_image_pixels == 1000
    assert s.exact_search_limit == 123
    assert (s.clip_model, s.clip_pretrained) == ("ViT-L-14", "openai")


def test_empty_values_mean_the_default(env):
    env(FRAMESCOPE_BATCH_SIZE="", FRAMESCOPE_PROFILE="", FRAMESCOPE_MODE="")
    s = Settings.from_env()
    assert (s.batch_size, s.profile, s.mode) == (16, "default", "local")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FRAMESCOPE_BATCH_SIZE", "lots", "FRAMESCOPE_BATCH_SIZE='lots' is not a whole number"),
        ("FRAMESCOPE_BATCH_SIZE", "2.5", "is not a whole number"),
        ("FRAMESCOPE_BATCH_SIZE", "0", "FRAMESCOPE_BATCH_SIZE=0 must be at least 1"),
        ("FRAMESCOPE_MAX_IMAGE_MB", "-5", "must be at least 1"),
        ("FRAMESCOPE_MAX_IMAGE_PIXELS", "1e6", "is not a whole number"),
        ("FRAMESCOPE_EXACT_SEARCH_LIMIT", "many", "is not a whole number"),
        ("FRAMESCOPE_PROFILE", "huge", "FRAMESCOPE_PROFILE='huge' must be one of: default, tiny"),
        ("FRAMESCOPE_MODE", "public", "must be one of: local, shared"),
        ("FRAMESCOPE_DEVICE", "tpu", "must be one of: auto, cpu, cuda, mps"),
    ],
)
def test_bad_values_are_config_errors(env, name, value, message):
    env(**{name: value})
    with pytest.raises(ConfigError) as info:
        Settings.from_env()
    assert message in str(info.value)


def test_overrides(env, tmp_path):
    env(FRAMESCOPE_PROFILE="default")
    s = Settings.from_env(profile="tiny", home=tmp_path / "x" / ".." / "h", batch_size=None)
    assert s.profile == "tiny"
    assert s.home == (tmp_path / "h").resolve()
    assert s.batch_size == 16  # None means "not given"
    with pytest.raises(ConfigError, match="must be one of"):
        Settings.from_env(profile="enormous")


def test_every_setting_is_documented():
    for name in ENVIRONMENT:
        assert name.startswith("FRAMESCOPE_")
    for name in ("FRAMESCOPE_HOME", "FRAMESCOPE_PROFILE", "FRAMESCOPE_ROOTS", "FRAMESCOPE_MODE"):
        assert name in ENVIRONMENT


# -- shared mode: only folders under FRAMESCOPE_ROOTS ------------------------------------------------


@pytest.fixture
def roots(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed-not-really").mkdir()
    return tmp_path, allowed


def test_local_mode_allows_any_folder(tmp_path):
    Settings(home=tmp_path / "h").check_folder_allowed(Path("/"))


def test_shared_mode_allows_folders_under_roots(roots):
    base, allowed = roots
    s = Settings(home=base / "h", mode="shared", roots=(allowed.resolve(),))
    s.check_folder_allowed(allowed)
    s.check_folder_allowed(allowed / "photos" / "2024")
    s.check_folder_allowed(allowed / "photos" / ".." / "photos")


@pytest.mark.parametrize(
    "rel", ["outside", "allowed-not-really", "allowed/..", "allowed/../outside", "/", "/etc"]
)
def test_shared_mode_refuses_other_folders(roots, rel):
    base, allowed = roots
    s = Settings(home=base / "h", mode="shared", roots=(allowed.resolve(),))
    with pytest.raises(AccessDenied) as info:
        s.check_folder_allowed(base / rel)
    message = str(info.value)
    assert "FRAMESCOPE_ROOTS" in message
    assert str(allowed.resolve()) in message  # says where indexing is allowed


def test_shared_mode_follows_symlinks(roots):
    base, allowed = roots
    s = Settings(home=base / "h", mode="shared", roots=(allowed.resolve(),))
    inward = base / "outside" / "link-to-photos"
    inward.symlink_to(allowed / "photos", target_is_directory=True)
    s.check_folder_allowed(inward)  # outside by name, inside once resolved
    outward = allowed / "photos" / "link-to-outside"
    outward.symlink_to(base / "outside", target_is_directory=True)
    with pytest.raises(AccessDenied):
        s.check_folder_allowed(outward)  # inside by name, outside once resolved


def test_shared_mode_without_roots_refuses_everything(tmp_path):
    s = Settings(home=tmp_path / "h", mode="shared")
    with pytest.raises(AccessDenied, match="none are configured"):
        s.check_folder_allowed(tmp_path)


def test_roots_from_the_environment(env, roots):
    base, allowed = roots
    env(FRAMESCOPE_MODE="shared", FRAMESCOPE_ROOTS=str(allowed))
    s = Settings.from_env()
    s.check_folder_allowed(allowed / "photos")
    with pytest.raises(AccessDenied):
        s.check_folder_allowed(base / "outside")


def test_indexer_refuses_outside_roots_before_writing(roots, embedder, shared_images):
    base, allowed = roots
    inside = allowed / "photos"
    outside = base / "outside"
    copy_images(small_images(shared_images, 2), inside)
    copy_images(small_images(shared_images, 2), outside)
    s = Settings(
        home=base / "home", profile="tiny", device="cpu", mode="shared", roots=(allowed.resolve(),)
    )
    library = Library(s.home)
    indexer = Indexer(library, embedder, s)
    empty = {"collections": 0, "media": 0, "embeddings": 0}
    for paths in ([outside], [inside, outside], [outside / "apple.jpg"], [base / "missing"]):
        with pytest.raises(AccessDenied):
            indexer.index(paths)
        assert row_counts(library.db_path) == empty
    assert not (s.home / "thumbs").exists()
    # a file inside the roots that is a symlink to a file outside is refused too
    sneaky = inside / "sneaky.jpg"
    sneaky.symlink_to(next(outside.iterdir()))
    with pytest.raises(AccessDenied):
        indexer.index([sneaky])
    assert row_counts(library.db_path) == empty

    report = indexer.index([inside])
    assert report.added == 2
    assert {r.path for r in library.catalog.media(status="ok")} == {
        str(p) for p in inside.iterdir() if p.is_file() and not p.is_symlink()
    }
    # ...also when met while scanning an allowed folder: its content is outside the roots
    assert [Path(f.path).name for f in report.failed] == ["sneaky.jpg"]
    assert "FRAMESCOPE_ROOTS" in report.failed[0].reason


def test_model_endpoint_and_fetch_settings_from_env(monkeypatch):
    env = {
        "FRAMESCOPE_VLM_BASE_URL": "http://gpu-box:8000/v1",
        "FRAMESCOPE_VLM_ENDPOINT_MODEL": "Qwen/Qwen2.5-VL-7B-Instruct",
        "FRAMESCOPE_VLM_API_KEY": "sk-vlm-secret",
        "FRAMESCOPE_VLM_TIMEOUT": "30",
        "FRAMESCOPE_LLM_BASE_URL": "http://gpu-box:8001/v1",
        "FRAMESCOPE_LLM_API_KEY": "sk-llm-secret",
        "FRAMESCOPE_FETCH_HOSTS": "YouTube.com, vimeo.com",
        "FRAMESCOPE_FETCH_MAX_MB": "100",
        "FRAMESCOPE_CAPTION_MODEL": "/models/blip",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (
        settings.vlm_endpoint.base_url == "http://gpu-box:8000/v1"
        and settings.vlm_endpoint.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    )
    assert (
        settings.vlm_endpoint.api_key == "sk-vlm-secret" and settings.vlm_endpoint.timeout == 30.0
    )
    assert (
        settings.llm_endpoint.base_url == "http://gpu-box:8001/v1"
        and settings.llm_endpoint.api_key == "sk-llm-secret"
    )
    assert (
        settings.fetch.allowed_hosts == ("youtube.com", "vimeo.com")
        and settings.fetch.max_bytes == 100 * 1024 * 1024
    )
    assert settings.caption_model == "/models/blip"
    assert settings.fetch.allow_loopback is False
    assert "secret" not in repr(settings)
    monkeypatch.setenv("FRAMESCOPE_FETCH_ALLOW_LOOPBACK", "1")
    assert Settings.from_env().fetch.allow_loopback is True
