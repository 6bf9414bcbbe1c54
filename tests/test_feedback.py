"""Relevance feedback: label propagation (against scikit-learn), Rocchio, marks, graph cache, 2-D map."""

from __future__ import annotations

import gc
import threading
import warnings

import numpy as np
import pytest
from scipy import sparse, stats

from core.errors import QueryError
from core.search import feedback as fb

DIM = 512
PER_CLUSTER = 300


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    """Two Gaussian clusters of unit vectors (A = rows 0..299, B = 300..599) and a query between.

    Within a cluster cosines are ~0.4, across ~0; the query is equally close to both centres, so
    ranking by it mixes the clusters.
    """
    rng = np.random.default_rng(7)
    centres = _unit(rng.standard_normal((2, DIM)))
    labels = np.repeat([0, 1], PER_CLUSTER)
    x = centres[labels] + 1.2 * rng.standard_normal((2 * PER_CLUSTER, DIM)) / np.sqrt(DIM)
    vectors = _unit(x)
    query = _unit(centres[0] + centres[1] + 0.3 * rng.standard_normal(DIM) / np.sqrt(DIM))
    return vectors, labels, query, vectors @ query


@pytest.fixture(scope="module")
def planted_graph(planted):
    return fb.build_knn_graph(planted[0], 10)


def _precision_a(scores: np.ndarray, labels: np.ndarray, k: int = PER_CLUSTER) -> float:
    return float(np.mean(labels[fb.ranking(scores)[:k]] == 0))


def _top_a_hits(query_scores: np.ndarray, labels: np.ndarray, count: int = 2) -> list[int]:
    """The best-ranked frames of cluster A under the query: what a user would mark first."""
    return [int(i) for i in fb.ranking(query_scores) if labels[i] == 0][:count]


# --- (1) the same as scikit-learn's LabelSpreading ---------------------------------------------


def test_propagation_matches_sklearn_label_spreading():
    from sklearn.neighbors import NearestNeighbors
    from sklearn.semi_supervised import LabelSpreading

    rng = np.random.default_rng(0)
    n, k, alpha, iterations = 200, 7, 0.99, 30
    centres = rng.standard_normal((3, 16))
    x = _unit(centres[rng.integers(0, 3, n)] + 0.6 * rng.standard_normal((n, 16)))
    y = np.full(n, -1)
    relevant, irrelevant = [0, 1], [2, 3, 4]
    y[relevant], y[irrelevant] = 1, 0
    with warnings.catch_warnings():  # tol=0: run exactly `iterations` sweeps, as we do
        warnings.simplefilter("ignore")
        model = LabelSpreading(
            kernel="knn", n_neighbors=k, alpha=alpha, max_iter=iterations, tol=0
        ).fit(x, y)

    # sklearn's graph: kneighbors_graph over the fitted points, which counts each point as its own
    # first neighbour; its normalized Laplacian then ignores that diagonal. So: k - 1 others,
    # directed, unweighted.
    graph = fb.build_knn_graph(x, k - 1, weights="connectivity", symmetric=False)
    theirs = NearestNeighbors(n_neighbors=k).fit(x).kneighbors_graph(x, k, mode="connectivity")
    theirs.setdiag(0)
    theirs.eliminate_zeros()
    assert abs(graph - theirs).sum() == 0

    seeds = np.zeros((n, 2), np.float32)
    seeds[irrelevant, 0] = 1.0
    seeds[relevant, 1] = 1.0
    f = fb.propagate(graph, seeds, alpha, iterations)
    distributions = f / f.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(distributions, model.label_distributions_, atol=1e-5)

    unlabeled = y == -1
    ours, sk = distributions[unlabeled, 1], model.label_distributions_[unlabeled, 1]
    assert stats.kendalltau(ours, sk).statistic == pytest.approx(1.0)
    np.testing.assert_array_equal(fb.ranking(ours)[:20], fb.ranking(sk)[:20])

    # label_propagation ranks by F_rel - F_irr of that same propagation, each class's seeds
    # summing to 1, computed as one column: the same up to float rounding.
    scores = fb.label_propagation(
        graph, relevant, irrelevant, alpha=alpha, iterations=iterations, prior_weight=0
    )
    expected = f[:, 1] / len(relevant) - f[:, 0] / len(irrelevant)
    np.testing.assert_allclose(scores, expected / np.abs(expected[unlabeled]).max(), atol=1e-6)
    assert stats.kendalltau(scores[unlabeled], expected[unlabeled]).statistic > 0.999


# --- (2) feedback lifts the marked cluster; (4) irrelevant marks push theirs down ---------------


def test_two_relevant_marks_lift_their_whole_cluster(planted, planted_graph):
    vectors, labels, query, query_scores = planted
    plain = _precision_a(query_scores, labels)
    assert 0.3 <= plain <= 0.7  # the query alone mixes the clusters

    marks = _top_a_hits(query_scores, labels)
    for weight in (0.0, fb.PRIOR_WEIGHT):
        scores = fb.label_propagation(planted_graph, marks, prior=query_scores, prior_weight=weight)
        assert _precision_a(scores, labels) >= 0.95

    _, rocchio_scores = fb.rocchio(query, vectors, marks)
    assert _precision_a(rocchio_scores, labels) >= plain + 0.15


def test_irrelevant_marks_push_their_cluster_down(planted, planted_graph):
    _, labels, _, query_scores = planted
    b_hits = [int(i) for i in fb.ranking(query_scores) if labels[i] == 1][:2]
    for weight in (0.0, fb.PRIOR_WEIGHT):
        scores = fb.label_propagation(
            planted_graph, irrelevant=b_hits, prior=query_scores, prior_weight=weight
        )
        bottom = fb.ranking(scores)[-PER_CLUSTER:]
        assert np.mean(labels[bottom] == 1) >= 0.95


def test_both_kinds_of_marks_and_rocchio_moves_the_query(planted, planted_graph):
    vectors, labels, query, query_scores = planted
    a_hits = _top_a_hits(query_scores, labels)
    b_hits = [int(i) for i in fb.ranking(query_scores) if labels[i] == 1][:2]
    scores = fb.label_propagation(planted_graph, a_hits, b_hits, prior=query_scores)
    assert _precision_a(scores, labels) >= 0.95

    new_query, rocchio_scores = fb.rocchio(query, vectors, a_hits, b_hits)
    assert new_query.dtype == np.float32 and rocchio_scores.dtype == np.float32
    assert np.linalg.norm(new_query) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(rocchio_scores, vectors @ new_query, rtol=1e-5, atol=1e-6)
    expected = _unit(query + 0.75 * vectors[a_hits].mean(0) - 0.15 * vectors[b_hits].mean(0))
    np.testing.assert_allclose(new_query, expected, atol=1e-5)
    centre_a = vectors[labels == 0].mean(0)
    assert new_query @ centre_a > query @ centre_a


# --- (3) the query prior ------------------------------------------------------------------------


def test_prior_weight_moves_between_the_query_and_the_labels(planted, planted_graph):
    _, labels, _, query_scores = planted
    marks = _top_a_hits(query_scores, labels)

    follows_query = fb.label_propagation(
        planted_graph, marks, prior=query_scores, prior_weight=1000.0
    )
    unmarked = np.setdiff1d(np.arange(len(labels)), marks)
    rho = stats.spearmanr(follows_query[unmarked], query_scores[unmarked]).statistic
    assert rho > 0.99
    assert abs(_precision_a(follows_query, labels) - _precision_a(query_scores, labels)) < 0.05

    follows_labels = fb.label_propagation(planted_graph, marks, prior=query_scores, prior_weight=0)
    assert _precision_a(follows_labels, labels) >= 0.95
    pure = fb.label_propagation(planted_graph, marks)  # no prior at all
    np.testing.assert_array_equal(follows_labels, pure)

    # The marks never reach cluster B (no edges cross), so pure propagation leaves it flat; with
    # the prior the query still orders it, while A stays well ahead of where the query put it.
    b = labels == 1
    assert np.ptp(pure[b]) < 1e-6
    mixed = fb.label_propagation(planted_graph, marks, prior=query_scores, prior_weight=1.0)
    assert stats.spearmanr(mixed[b], query_scores[b]).statistic > 0.99
    assert _precision_a(mixed, labels) >= _precision_a(query_scores, labels) + 0.3


# --- (5) validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relevant", "irrelevant", "message"),
    [
        ([], [], "mark at least one frame"),
        ([600], [], "out of range"),
        ([-1], [], "out of range"),
        ([3], [3], "both relevant and irrelevant"),
        ([1.5], [], "integers"),
    ],
)
def test_bad_marks_are_refused(planted, planted_graph, relevant, irrelevant, message):
    vectors, _, query, _ = planted
    with pytest.raises(QueryError, match=message):
        fb.label_propagation(planted_graph, relevant, irrelevant)
    with pytest.raises(QueryError, match=message):
        fb.rocchio(query, vectors, relevant, irrelevant)


def test_mark_dicts_and_other_bad_input(planted, planted_graph):
    vectors, _, _, query_scores = planted
    rel, irr = fb.split_marks({5: 1, 9: -1, 2: 1})
    assert rel.tolist() == [5, 2] and irr.tolist() == [9]
    with pytest.raises(QueryError, match=r"\+1 \(relevant\) or -1"):
        fb.split_marks({5: 0})
    with pytest.raises(QueryError, match="mark at least one frame"):
        fb.refine(fb.PROPAGATION, {}, query_scores, graph=planted_graph)
    with pytest.raises(QueryError, match="unknown feedback method"):
        fb.refine("magic", {1: 1}, query_scores)
    with pytest.raises(QueryError, match="query scores have shape"):
        fb.label_propagation(planted_graph, [1], prior=query_scores[:10], prior_weight=1.0)
    with pytest.raises(QueryError, match="cancel"):
        fb.rocchio(vectors[0], vectors, irrelevant=[0], c=1.0)
    assert fb.check_marks(10, [3, 3, 1], np.array([4]))[0].tolist() == [1, 3]


# --- (6) the graph and its cache ----------------------------------------------------------------


def test_graph_is_symmetric_without_self_loops(planted):
    vectors = planted[0]
    k = 10
    graph = fb.build_knn_graph(vectors, k)
    assert isinstance(graph, sparse.csr_matrix) and graph.dtype == np.float32
    assert abs(graph - graph.T).max() == 0
    assert not graph.diagonal().any()
    assert np.diff(graph.indptr).min() >= k  # k own neighbours, plus those that chose the row
    assert graph.data.min() > 0 and graph.data.max() <= 1

    directed = fb.build_knn_graph(vectors, k, symmetric=False)
    assert (np.diff(directed.indptr) == k).all()
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    exact = np.argsort(-sims, axis=1)[:, :k]
    for row in range(0, len(vectors), 37):
        assert set(directed[row].indices) == set(exact[row])
    # Heat kernel: the closer neighbour weighs more.
    row = directed[0]
    order = np.argsort(-sims[0, row.indices])
    assert (np.diff(row.data[order]) <= 1e-6).all()


def test_approximate_graph_for_large_scopes():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((30, 32))
    x = _unit(centres[rng.integers(0, 30, 4000)] + 0.5 * rng.standard_normal((4000, 32)))
    k = 10
    approx = fb.build_knn_graph(x, k, symmetric=False, exact_limit=1000)  # list by list
    exact = fb.build_knn_graph(x, k, symmetric=False)
    assert not approx.diagonal().any()
    recall = np.mean(
        [len(set(approx[i].indices) & set(exact[i].indices)) / k for i in range(0, 4000, 7)]
    )
    assert recall >= 0.8
    sym = fb.build_knn_graph(x, k, exact_limit=1000)
    assert abs(sym - sym.T).max() == 0 and not sym.diagonal().any()


def test_tiny_scopes():
    one = fb.build_knn_graph(_unit(np.ones((1, 4))), 10)
    assert one.shape == (1, 1) and one.nnz == 0
    three = fb.build_knn_graph(_unit(np.eye(3, 4) + 0.1), 10)
    assert three.nnz == 6  # k capped at n - 1
    scores = fb.label_propagation(three, [0])
    assert scores.shape == (3,) and fb.ranking(scores)[0] == 0


def test_graph_cache_hits_and_misses(planted):
    vectors = planted[0]
    ids = np.arange(100, 100 + len(vectors))
    cache = fb.GraphCache(max_graphs=2)
    first = cache.get("clip-b32", ids, vectors)
    assert cache.get("clip-b32", ids, vectors) is first
    assert cache.builds == 1

    other_scope = cache.get("clip-b32", ids[:400], vectors[:400])
    assert other_scope is not first and other_scope.shape == (400, 400)
    other_model = cache.get("clip-l14", ids, vectors)
    assert other_model is not first
    assert cache.builds == 3 and len(cache) == 2  # the oldest was evicted
    assert cache.get("clip-b32", ids, vectors) is not first
    assert cache.builds == 4

    # The same set of ids in another order is the same scope: reordered, not rebuilt.
    perm = np.random.default_rng(1).permutation(len(ids))
    reordered = cache.get("clip-b32", ids[perm], vectors[perm])
    assert cache.builds == 4
    assert abs(reordered - fb.build_knn_graph(vectors[perm])).max() < 1e-6


def test_graph_cache_builds_once_under_concurrent_sessions(planted):
    vectors = planted[0]
    ids = np.arange(len(vectors))
    cache = fb.GraphCache()
    results = []

    def session():
        results.append(cache.get("clip-b32", ids, vectors))

    threads = [threading.Thread(target=session) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.builds == 1
    assert all(r is results[0] for r in results)


def test_propagation_operator_is_made_once_per_graph_and_freed_with_it(planted):
    graph = fb.build_knn_graph(planted[0][:100], 5)
    op = fb.prepare(graph)
    assert fb.prepare(graph) is op
    assert sorted(op.order.tolist()) == list(range(100))
    key = id(graph)
    del graph
    gc.collect()
    assert key not in fb._operators


def test_scope_key_ignores_order_but_not_content():
    assert fb.scope_key("m", [3, 1, 2]) == fb.scope_key("m", [1, 2, 3])
    assert fb.scope_key("m", [1, 2, 3]) != fb.scope_key("m", [1, 2, 4])
    assert fb.scope_key("m", [1, 2, 3]) != fb.scope_key("n", [1, 2, 3])


# --- what the page uses -------------------------------------------------------------------------


def test_refine_pins_marks_and_reports_rank_changes(planted, planted_graph):
    vectors, labels, query, query_scores = planted
    before = fb.ranking(query_scores)
    a_hits = _top_a_hits(query_scores, labels)
    b_hit = int(before[0]) if labels[before[0]] == 1 else int(np.nonzero(labels == 1)[0][0])
    marks = {a_hits[0]: 1, a_hits[1]: 1, b_hit: -1}
    for method in fb.METHODS:
        result = fb.refine(
            method,
            marks,
            query_scores,
            graph=planted_graph,
            vectors=vectors,
            query_vector=query,
        )
        assert sorted(result.order.tolist()) == list(range(len(labels)))
        assert set(result.order[:2].tolist()) == set(a_hits)
        assert result.order[-1] == b_hit
        assert (result.query_vector is not None) == (method == fb.ROCCHIO)

        changes = fb.rank_changes(before, result.order, top_k=20)
        assert changes.shown.tolist() == result.order[:20].tolist()
        rank_before = {int(p): r for r, p in enumerate(before)}
        assert changes.before.tolist() == [rank_before[int(p)] for p in changes.shown]
        assert set(changes.dropped.tolist()) == set(before[:20].tolist()) - set(
            result.order[:20].tolist()
        )


def test_rank_changes_by_hand():
    before = np.array([0, 1, 2, 3, 4])
    after = np.array([3, 0, 1, 4, 2])
    changes = fb.rank_changes(before, after, top_k=3)
    assert changes.shown.tolist() == [3, 0, 1]
    assert changes.delta.tolist() == [3, -1, -1]  # 3 rose from 4th to 1st; 0 and 1 fell one
    assert changes.dropped.tolist() == [2]


# --- (7) the 2-D map ----------------------------------------------------------------------------


def test_project_2d_separates_the_planted_clusters(planted):
    vectors, labels, _, _ = planted
    xy = fb.project_2d(vectors)
    assert xy.shape == (len(vectors), 2) and xy.dtype == np.float32
    np.testing.assert_array_equal(xy, fb.project_2d(vectors))  # deterministic

    a, b = xy[labels == 0, 0], xy[labels == 1, 0]  # the first axis is the A-B direction
    gap = abs(a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2)
    assert gap > 4
    threshold = (a.mean() + b.mean()) / 2
    side = (xy[:, 0] > threshold) == (a.mean() > threshold)
    assert np.mean(side == (labels == 0)) >= 0.99

    sampled = fb.project_2d(vectors, max_points=100)  # fitted on a sample, every row projected
    assert sampled.shape == (len(vectors), 2)
    sa, sb = sampled[labels == 0, 0], sampled[labels == 1, 0]
    assert abs(sa.mean() - sb.mean()) / np.sqrt((sa.var() + sb.var()) / 2) > 4

    assert fb.project_2d(vectors[:0]).shape == (0, 2)
    assert fb.project_2d(vectors[:1]).shape == (1, 2)
