"""Shared fixtures for the core library tests: real media, a session tiny CLIP, tmp libraries.

Everything runs offline: the `tiny` profile builds a random-weight tiny CLIP without any download.
Helpers that build bad files live here too, so the media, store and CLI tests use the same ones.
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

from core.config import Settings
from core.indexing import Indexer
from core.library import Library
from core.models.clip import ClipEmbedder, load_clip

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


# -- real media ----------------------------------------------------------------------------

# Megamind.avi's shot cuts (seconds), found from consecutive-frame HSV differences (each about
# 40 on a 0-255 scale against at most 7 elsewhere) and confirmed on a contact sheet of its
# frames: woman at the table / man facing her / woman again / man in glasses close up. The
# black first frame (0.04 s) is shorter than a scene and belongs to the first one.
MEGAMIND_CUTS = [4.129, 6.465, 8.383]


def require_media(sub: str = "images") -> Path:
    """The shared media folder: skipped when absent, but a failure on CI (CI=true)."""
    folder = MEDIA / sub
    if not folder.is_dir() or not any(folder.iterdir()):
        message = (
            f"shared media not found at {folder} (expected ../shared/media next to the repository; "
            "tests that need real photos and videos cannot run without it)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def media_root() -> Path:
    require_media("images")
    return MEDIA


@pytest.fixture(scope="session")
def shared_images(media_root: Path) -> list[Path]:
    """The real photos (JPEG and PNG), sorted by name."""
    images = sorted(
        p for p in (media_root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
    )
    assert len(images) >= 20, f"expected the shared photo set, found {len(images)} images"
    return images


def small_images(images: Sequence[Path], n: int, max_bytes: int = 200_000) -> list[Path]:
    """The first n shared images smaller than max_bytes (keeps copies and limits predictable)."""
    picked = [p for p in images if p.stat().st_size < max_bytes][:n]
    assert len(picked) == n
    return picked


def copy_images(images: Sequence[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in images:
        dst = folder / src.name
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


# -- the tiny model and libraries ------------------------------------------------------------


@pytest.fixture(scope="session")
def models_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def embedder(models_home: Path) -> ClipEmbedder:
    """One tiny CLIP for the whole session (random weights, seeded: the same in every process)."""
    return load_clip(Settings(home=models_home, profile="tiny", device="cpu"))


def tiny_settings(home: Path, **overrides) -> Settings:
    return Settings(home=home, profile="tiny", device="cpu", batch_size=4, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tiny_settings(tmp_path / "home")


@pytest.fixture
def library(settings: Settings):
    lib = Library(settings.home, exact_search_limit=settings.exact_search_limit)
    yield lib
    lib.close()


@pytest.fixture
def indexer(library: Library, embedder: ClipEmbedder, settings: Settings) -> Indexer:
    return Indexer(library, embedder, settings)


@pytest.fixture
def photos(tmp_path: Path, shared_images: list[Path]) -> Path:
    """A folder with copies of 6 small real photos (safe to modify)."""
    folder = tmp_path / "photos"
    copy_images(small_images(shared_images, 6), folder)
    return folder


@pytest.fixture
def count_embeds(monkeypatch, embedder: ClipEmbedder) -> Callable[[], int]:
    """Counts images passed through the embedder's forward pass from now on."""
    seen = [0]
    real = embedder.embed_tensors

    def counting(batch):
        seen[0] += int(batch.shape[0])
        return real(batch)

    monkeypatch.setattr(embedder, "embed_tensors", counting)
    return lambda: seen[0]


# -- reading the database as a user (or another process) would --------------------------------


def db_query(db_path: Path, sql: str, *args) -> list[tuple]:
    """Rows from a separate read-only connection: what is committed, whoever wrote it."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def embedding_ids_by_path(db_path: Path, model_key: str) -> dict[str, int]:
    rows = db_query(
        db_path,
        "SELECT m.path, e.id FROM embeddings e JOIN media m ON m.id = e.media_id "
        "WHERE e.model_key = ? AND e.frame_id IS NULL",
        model_key,
    )
    return dict(rows)


def vectors_by_path(db_path: Path, model_key: str) -> dict[str, np.ndarray]:
    rows = db_query(
        db_path,
        "SELECT m.path, e.vector FROM embeddings e JOIN media m ON m.id = e.media_id "
        "WHERE e.model_key = ? AND e.frame_id IS NULL",
        model_key,
    )
    return {p: np.frombuffer(v, dtype=np.float32) for p, v in rows}


def damage_embeddings(db_path: Path) -> int:
    """Zero the pages that hold stored vectors (never the header page); how many were zeroed."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        blobs = [r[0] for r in conn.execute("SELECT vector FROM embeddings")]
    finally:
        conn.close()
    data = bytearray(db_path.read_bytes())
    pages = set()
    for blob in blobs:
        at = data.find(blob[:32])
        if at >= page_size:
            pages.add(at // page_size)
    for page in pages:
        data[page * page_size : (page + 1) * page_size] = bytes(page_size)
    db_path.write_bytes(bytes(data))
    return len(pages)


def row_counts(db_path: Path) -> dict[str, int]:
    return {
        table: db_query(db_path, f"SELECT COUNT(*) FROM {table}")[0][0]
        for table in ("collections", "media", "embeddings")
    }


def brute_force(library: Library, model_key: str, query: np.ndarray, k: int) -> list[int]:
    """Ids of the top-k stored vectors by exact inner product (ties broken by id)."""
    ids, vectors = library.vectors.load(model_key)
    scores = vectors @ query
    order = np.lexsort((ids, -scores))[:k]
    return [int(ids[i]) for i in order]


# -- bad and unusual files -----------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header declares width x height 8-bit grey pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows of data; the rest "to come"
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def truncated_jpeg(src: Path) -> bytes:
    data = src.read_bytes()
    return data[: len(data) // 2]


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def ico_bytes() -> bytes:
    return encode(Image.new("RGB", (32, 32), (200, 30, 30)), "ICO")


def ppm_bytes() -> bytes:
    return encode(Image.new("RGB", (32, 32), (30, 200, 30)), "PPM")


# What each bad file is called in a test folder, its content, and the reason a user must see.
BAD_FILES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "notes-not-an-image.jpg": (
        lambda _: b"shopping list: milk, eggs\n" * 20,
        "not a readable image",
    ),
    "empty.jpg": (lambda _: b"", "empty file"),
    "truncated.jpg": (truncated_jpeg, "truncated or corrupt"),
    "bomb.png": (lambda _: bomb_png(), "decompression bomb"),
    "phone.heic": (
        lambda _: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        "unsupported image format HEIC",
    ),
    "icon-renamed.jpg": (lambda _: ico_bytes(), "unsupported image format ICO"),
    "pixmap-renamed.jpg": (lambda _: ppm_bytes(), "unsupported image format PPM"),
}


def write_bad_files(folder: Path, jpeg_source: Path) -> dict[str, str]:
    """Write BAD_FILES (plus a dangling symlink) into folder; returns file name -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (make, reason) in BAD_FILES.items():
        (folder / name).write_bytes(make(jpeg_source))
        expected[name] = reason
    (folder / "dangling.jpg").symlink_to(folder / "no-such-target.jpg")
    expected["dangling.jpg"] = "cannot read the file"
    return expected


# -- the command line ------------------------------------------------------------------------------


def framescope_exe() -> str:
    exe = Path(sys.executable).parent / "framescope"
    if exe.exists():
        return str(exe)
    found = shutil.which("framescope")
    assert found, "the framescope console script is not installed (pip install -e .)"
    return found


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FRAMESCOPE_") and k not in ("PYTHONWARNINGS",)
    }
    env.update(
        FRAMESCOPE_HOME=str(home),
        FRAMESCOPE_PROFILE="tiny",
        FRAMESCOPE_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], home: Path, *, timeout: float = 300, **extra_env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [framescope_exe(), *map(str, args)],
        env=cli_env(home, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=home.parent,
    )


# -- the real app in a real browser -------------------------------------------------------------
# Streamlit on 127.0.0.1 with the tiny profile (one per test module, on its own data directory),
# Debian's Chromium driven by Playwright, and the shared media served over HTTP for web links.

CHROMIUM = "/usr/bin/chromium"


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (browser tests must run in CI)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    _require(MEDIA.is_dir(), f"shared media not found at {MEDIA}")
    home = tmp_path_factory.mktemp("browser-home")
    port = _free_port()
    env = {
        **os.environ,
        "FRAMESCOPE_HOME": str(home),
        "FRAMESCOPE_PROFILE": "tiny",
        "HF_HUB_OFFLINE": "1",
        "FRAMESCOPE_FETCH_ALLOW_LOOPBACK": "1",  # the summary flow fetches from a server on 127.0.0.1
    }
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--server.headless", "true"]
    log_path = home / "streamlit.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail("streamlit did not start: " + log_path.read_text()[-2000:])


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=120_000)  # models on 2 busy cores: slow, not broken

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def media_server():
    """The shared media over HTTP on 127.0.0.1 (the app runs with the test-only loopback
    setting); `.url(path)` gives a link, `.hits` counts requests per path."""
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, *args):
            pass

    handler = functools.partial(Handler, directory=str(MEDIA))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}/{path.lstrip('/')}"
    server.hits = hits
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(browser, app_url, tmp_path, request):
    """A fresh browser page on the app; a screenshot is kept when the test fails (and always in
    FRAMESCOPE_SCREENSHOTS when that is set)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(180_000)
    page.app_url = app_url
    yield page
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
    page.close()


# -- process exit ----------------------------------------------------------------------------

_exit_status = {"code": 0}


def pytest_sessionfinish(session, exitstatus):
    _exit_status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without the interpreter's teardown, once every result has been reported.

    After a full run (torch, FFmpeg and FAISS thread pools, Streamlit script threads, Playwright
    all in one process) a native library's static destructor occasionally aborts at exit
    ("terminate called without an active exception"), turning a green run into exit code 134.
    Nothing of ours runs after this point, so skipping that teardown loses nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status["code"])
