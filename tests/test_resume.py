"""A real `kill -9` in the middle of `framescope index`: the library stays consistent, and running
the same command again finishes the job with exactly what an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, framescope_exe, run_cli
from PIL import Image

from core.library.index import VectorIndex

pytestmark = pytest.mark.slow

N_IMAGES = 120
BATCH_SIZE = "4"


@pytest.fixture(scope="module")
def resume_folder(tmp_path_factory, shared_images) -> Path:
    """120 distinct PNGs (shared photos, each crop different so every file's sha256 differs).

    They are large PNGs on purpose: decoding them keeps the indexer busy for several seconds, so
    the test can stop it half-way."""
    folder = tmp_path_factory.mktemp("resume") / "photos"
    folder.mkdir()
    sources = []
    for path in shared_images:
        with Image.open(path) as im:
            sources.append(im.convert("RGB"))
    for i in range(N_IMAGES):
        image = sources[i % len(sources)]
        k = i // len(sources)
        w, h = image.size
        crop = image.crop((3 * k, 2 * k, w - k, h - 2 * k)).resize((800, 600))
        crop.save(folder / f"img_{i:03d}.png", compress_level=1)
    return folder


def snapshot(home: Path, model_key: str) -> dict:
    """What a run left in a data directory: rows, vectors by path, and the saved FAISS ids."""
    conn = sqlite3.connect(home / "library.db")
    try:
        rows = set(conn.execute("SELECT path, sha256, status FROM media").fetchall())
        vectors = {
            p: np.frombuffer(v, dtype=np.float32)
            for p, v in conn.execute(
                "SELECT m.path, e.vector FROM embeddings e JOIN media m ON m.id = e.media_id "
                "WHERE e.model_key = ?",
                (model_key,),
            )
        }
        ids = sorted(
            i
            for (i,) in conn.execute("SELECT id FROM embeddings WHERE model_key = ?", (model_key,))
        )
    finally:
        conn.close()
    saved = None
    for manifest in (home / "indexes").glob("*.json"):
        data = json.loads(manifest.read_text())
        if data["model_key"] == model_key:
            saved = VectorIndex.load(manifest.with_suffix(".faiss"), model_key, data["dim"])
    assert saved is not None, f"no loadable FAISS index for {model_key} in {home}"
    return {"rows": rows, "vectors": vectors, "ids": ids, "faiss_ids": sorted(saved.ids().tolist())}


def index_json(folder: Path, home: Path) -> dict:
    result = run_cli(
        ["--profile", "tiny", "index", folder, "--json"], home, FRAMESCOPE_BATCH_SIZE=BATCH_SIZE
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, resume_folder, embedder) -> dict:
    """The same folder indexed without interruption, in another data directory."""
    home = tmp_path_factory.mktemp("reference") / "home"
    report = index_json(resume_folder, home)
    assert report["added"] == N_IMAGES
    assert report["failed"] == []
    return snapshot(home, embedder.key)


def committed_embeddings(db: Path) -> int | None:
    """Embeddings committed so far, read as another process would (read-only); None if not yet."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # the schema is being created, or a writer holds a lock for a moment


def assert_consistent(home: Path) -> int:
    """The database after the kill: intact, and every image row complete. Returns the image count."""
    conn = sqlite3.connect(home / "library.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        statuses = conn.execute("SELECT DISTINCT status FROM media").fetchall()
        assert set(statuses) <= {("ok",)}
        per_media = conn.execute(
            "SELECT m.id, m.thumb, COUNT(e.id) FROM media m "
            "LEFT JOIN embeddings e ON e.media_id = m.id GROUP BY m.id"
        ).fetchall()
        assert all(n == 1 for _, _, n in per_media), "an image row without its embedding"
        orphans = conn.execute(
            "SELECT COUNT(*) FROM embeddings WHERE media_id NOT IN (SELECT id FROM media)"
        ).fetchone()[0]
        assert orphans == 0
        for _, thumb, _ in per_media:  # thumbnails are written before their rows
            assert (home / "thumbs" / thumb).is_file()
        return len(per_media)
    finally:
        conn.close()


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.85])
def test_kill_9_during_indexing_then_resume(tmp_path, resume_folder, reference, embedder, fraction):
    home = tmp_path / "home"
    db = home / "library.db"
    target = max(int(BATCH_SIZE), int(fraction * N_IMAGES))
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [framescope_exe(), "--profile", "tiny", "index", str(resume_folder)],
            env=cli_env(home, FRAMESCOPE_BATCH_SIZE=BATCH_SIZE),
            stdout=out,
            stderr=err,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 300
            seen = None
            while time.monotonic() < deadline and proc.poll() is None:
                seen = committed_embeddings(db)
                if seen is not None and seen >= target:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.01)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the indexer was not stopped part-way (exit {proc.returncode}, {seen} embeddings seen, "
        f"target {target}): {(tmp_path / 'stderr').read_text()[-2000:]}"
    )

    stored = assert_consistent(home)
    assert target <= stored < N_IMAGES, f"killed with {stored} of {N_IMAGES} images stored"

    report = index_json(resume_folder, home)
    assert report["unchanged"] == stored  # what was stored is kept, not embedded again
    assert report["added"] == N_IMAGES - stored
    assert report["failed"] == [] and report["updated"] == 0

    resumed = snapshot(home, embedder.key)
    assert resumed["rows"] == reference["rows"]
    assert set(resumed["vectors"]) == set(reference["vectors"])
    for path, vector in resumed["vectors"].items():
        np.testing.assert_allclose(vector, reference["vectors"][path], atol=1e-5, err_msg=path)
    assert len(resumed["ids"]) == N_IMAGES
    assert resumed["faiss_ids"] == resumed["ids"]
