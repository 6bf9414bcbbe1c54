"""The FAISS vector index: exact while small, IVF with recall@10 >= 0.95 when large, ids kept in
step through add/remove, a save/load round trip bound to one model key and dimension."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.library.index import FLAT, IVF, VectorIndex, choose_kind, recall_at_k

DIM = 64
KEY = "open_clip/test-model/v1"


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = DIM, clusters: int = 50, spread: float = 0.6, seed: int = 0):
    """Unit vectors around random centres, as photo embeddings cluster by subject."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((clusters, dim)))
    labels = rng.integers(clusters, size=n)
    noise = rng.standard_normal((n, dim)) * spread / np.sqrt(dim)
    return unit_rows(centres[labels] + noise), centres


def exact_top(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[order]


@pytest.fixture(scope="module")
def large():
    vectors, centres = clustered(5000)
    ids = np.arange(1000, 6000, dtype=np.int64)  # ids are row ids, not positions
    index = VectorIndex.build(KEY, DIM, ids, vectors, exact_limit=2000)
    return index, ids, vectors, centres


# -- kinds ---------------------------------------------------------------------------------------


def test_small_index_is_exact():
    vectors, _ = clustered(300, seed=1)
    ids = np.arange(7, 307, dtype=np.int64) * 3
    index = VectorIndex.build(KEY, DIM, ids, vectors, exact_limit=2000)
    assert index.kind == FLAT
    assert index.ntotal == 300
    rng = np.random.default_rng(2)
    queries = unit_rows(rng.standard_normal((25, DIM)))
    scores, found = index.search(queries, 10)
    np.testing.assert_array_equal(found, exact_top(vectors, ids, queries, 10))
    np.testing.assert_allclose(
        scores, np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10], atol=1e-5
    )


def test_choose_kind():
    assert choose_kind(2000, 2000) == FLAT
    assert choose_kind(2001, 2000) == IVF
    assert choose_kind(0, 2000) == FLAT


def test_empty_index():
    index = VectorIndex.build(
        KEY, DIM, np.empty(0, np.int64), np.empty((0, DIM), np.float32), exact_limit=10
    )
    assert index.kind == FLAT
    assert index.ntotal == 0
    assert index.ids().tolist() == []


def test_large_index_is_ivf_with_good_recall(large):
    index, ids, vectors, centres = large
    assert index.kind == IVF
    assert index.ntotal == 5000
    assert index.manifest.nlist > 1
    assert 1 <= index.manifest.nprobe <= index.manifest.nlist
    assert index.manifest.trained_on == 5000
    rng = np.random.default_rng(11)
    # queries near stored items (an image query) and near cluster centres (a text query)
    near_items = unit_rows(
        vectors[rng.choice(5000, 150, replace=False)]
        + 0.5 * unit_rows(rng.standard_normal((150, DIM)))
    )
    near_centres = unit_rows(
        centres[rng.integers(len(centres), size=150)]
        + 0.3 * unit_rows(rng.standard_normal((150, DIM)))
    )
    for queries in (near_items, near_centres):
        _, found = index.search(queries, 10)
        recall = recall_at_k(found, exact_top(vectors, ids, queries, 10))
        assert recall >= 0.95, recall


def test_ivf_search_within_allowed_ids(large):
    """The library searches IVF with a filter only for scopes above the exact limit (2000 here)."""
    index, ids, vectors, _ = large
    rng = np.random.default_rng(5)
    allowed = np.sort(rng.choice(ids, 2500, replace=False))
    picks = vectors[rng.choice(5000, 100, replace=False)]
    queries = unit_rows(picks + 0.5 * unit_rows(rng.standard_normal((100, DIM))))
    _, found = index.search(queries, 10, allowed)
    assert set(found[found >= 0].tolist()) <= set(allowed.tolist())
    mask = np.isin(ids, allowed)
    exact = exact_top(vectors[mask], ids[mask], queries, 10)
    assert recall_at_k(found, exact) >= 0.95


def test_flat_search_within_allowed_ids():
    vectors, _ = clustered(200, seed=4)
    ids = np.arange(200, dtype=np.int64) + 1
    index = VectorIndex.build(KEY, DIM, ids, vectors, exact_limit=1000)
    allowed = ids[::7]
    queries = unit_rows(np.random.default_rng(6).standard_normal((5, DIM)))
    _, found = index.search(queries, 5, allowed)
    mask = np.isin(ids, allowed)
    np.testing.assert_array_equal(found, exact_top(vectors[mask], ids[mask], queries, 5))


def test_k_larger_than_the_index():
    vectors, _ = clustered(5, seed=9)
    index = VectorIndex.build(KEY, DIM, np.arange(5), vectors, exact_limit=100)
    scores, found = index.search(vectors[:1], 50)
    assert sorted(found[0].tolist()) == [0, 1, 2, 3, 4]
    assert found[0, 0] == 0
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


# -- ids in step -----------------------------------------------------------------------------------


@pytest.mark.parametrize("exact_limit", [10_000, 1000], ids=["flat", "ivf"])
def test_add_and_remove_keep_ids_in_step(exact_limit):
    vectors, _ = clustered(3000, seed=3)
    ids = np.arange(3000, dtype=np.int64) * 2 + 1
    index = VectorIndex.build(KEY, DIM, ids[:2500], vectors[:2500], exact_limit=exact_limit)
    assert index.kind == (FLAT if exact_limit == 10_000 else IVF)
    expected = set(ids[:2500].tolist())
    assert set(index.ids().tolist()) == expected

    index.add(ids[2500:], vectors[2500:])
    expected |= set(ids[2500:].tolist())
    gone = ids[::3]
    index.remove(gone)
    expected -= set(gone.tolist())
    index.remove(np.array([999_999], np.int64))  # not there: no effect
    index.add(np.empty(0, np.int64), np.empty((0, DIM), np.float32))

    found = index.ids()
    assert len(found) == len(expected) == index.ntotal == index.manifest.count
    assert set(found.tolist()) == expected
    # removed ids are never returned; added ones are found by their own vector
    _, top = index.search(vectors[2500:2510], 1)
    for row, i in zip(top[:, 0].tolist(), ids[2500:2510].tolist(), strict=True):
        assert row == i or i in set(gone.tolist())
    _, hits = index.search(vectors[gone[:20] // 2], 10)
    assert not set(hits.ravel().tolist()) & set(gone.tolist())


# -- saving and loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("exact_limit", [10_000, 2000], ids=["flat", "ivf"])
def test_save_load_round_trip(tmp_path, large, exact_limit):
    _, ids, vectors, _ = large
    index = VectorIndex.build(KEY, DIM, ids, vectors, exact_limit=exact_limit)
    path = tmp_path / "indexes" / "model.faiss"
    index.save(path)
    assert path.is_file() and path.with_suffix(".json").is_file()
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["model_key"] == KEY and manifest["dim"] == DIM and manifest["count"] == 5000
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.faiss", "model.json"]

    loaded = VectorIndex.load(path, KEY, DIM)
    assert loaded is not None
    assert loaded.kind == index.kind
    assert loaded.manifest == index.manifest
    assert sorted(loaded.ids().tolist()) == sorted(ids.tolist())
    queries = unit_rows(np.random.default_rng(8).standard_normal((20, DIM)))
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])
    if loaded.kind == IVF:
        assert loaded.index.nprobe == index.manifest.nprobe


def test_load_refuses_another_model_or_dimension(tmp_path):
    vectors, _ = clustered(50, seed=2)
    path = tmp_path / "model.faiss"
    VectorIndex.build(KEY, DIM, np.arange(50), vectors, exact_limit=100).save(path)
    assert VectorIndex.load(path, KEY, DIM) is not None
    assert VectorIndex.load(path, "open_clip/another-model/v1", DIM) is None
    assert VectorIndex.load(path, KEY, DIM * 2) is None
    assert VectorIndex.load(tmp_path / "missing.faiss", KEY, DIM) is None


def test_load_refuses_a_manifest_that_does_not_match_the_index(tmp_path):
    vectors, _ = clustered(50, seed=2)
    path = tmp_path / "model.faiss"
    VectorIndex.build(KEY, DIM, np.arange(50), vectors, exact_limit=100).save(path)
    manifest = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**manifest, "count": 49}))
    assert VectorIndex.load(path, KEY, DIM) is None
    path.with_suffix(".json").write_text(json.dumps({**manifest, "dim": 32}))
    assert VectorIndex.load(path, KEY, 32) is None  # the file holds 64-d vectors
    path.with_suffix(".json").write_text(json.dumps(manifest))
    path.write_bytes(b"\0" * 100)
    assert VectorIndex.load(path, KEY, DIM) is None


# -- rebuild thresholds and recall maths -------------------------------------------------------------


def test_should_rebuild_flat():
    vectors, _ = clustered(100, seed=1)
    index = VectorIndex.build(KEY, DIM, np.arange(100), vectors, exact_limit=2000)
    assert not index.should_rebuild(100, 2000)
    assert not index.should_rebuild(2000, 2000)
    assert index.should_rebuild(2001, 2000)  # grown past the exact limit: time for IVF


def test_should_rebuild_ivf(large):
    index = large[0]
    trained = index.manifest.trained_on
    assert trained == 5000
    assert not index.should_rebuild(5000, 2000)
    assert not index.should_rebuild(1001, 2000)
    assert index.should_rebuild(1000, 2000)  # shrunk to half the exact limit: exact again
    assert not index.should_rebuild(4 * trained, 2000)
    assert index.should_rebuild(4 * trained + 1, 2000)  # grown 4x: retrain the centroids


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[3, 2, 1], [6, 5, 4]]), exact) == 1.0  # order does not matter
    assert recall_at_k(np.array([[1, 2, 9], [4, -1, -1]]), exact) == pytest.approx(3 / 6)
    assert recall_at_k(np.array([[7, 8, 9], [7, 8, 9]]), exact) == 0.0
    # fewer than k true neighbours (-1 in exact): only the real ones count
    assert recall_at_k(np.array([[1, 5, 6]]), np.array([[1, -1, -1]])) == 1.0
    assert recall_at_k(np.array([[-1, -1]]), np.array([[-1, -1]])) == 1.0
