"""Relevance feedback: re-rank a search scope from frames marked relevant or irrelevant.

Two methods, both over every frame of the scope:

- label propagation (Zhou et al. 2004, "Learning with local and global consistency") on a kNN
  graph of the scope's CLIP vectors: marks spread along the data manifold, so marking two frames
  of a scene lifts the whole scene even where the query scores it poorly;
- Rocchio: move the query vector towards the relevant frames and away from the irrelevant ones.

Marks are positions in the scope's vector array: `relevant` / `irrelevant` index arrays, or a
dict {position: +1 or -1} (see `split_marks`).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import faiss
import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse.csgraph import reverse_cuthill_mckee

from core.errors import QueryError
from core.library.index import choose_nlist
from core.types import Vector, Vectors

Scores = NDArray[np.float32]  # (n,), one per frame of the scope
Positions = NDArray[np.int64]  # (m,), positions in the scope's vector array

PROPAGATION, ROCCHIO = "propagation", "rocchio"
METHODS = (PROPAGATION, ROCCHIO)

DEFAULT_K = 10
EXACT_LIMIT = 20_000  # exact kNN costs n^2: ~1.5 s at 20k on 2 cores, ~40 s at 100k
GRAPH_LISTS = 8  # lists each list is searched against when approximate (see _knn_by_lists)
HEAT, COSINE, CONNECTIVITY = "heat", "cosine", "connectivity"

ALPHA = 0.99
ITERATIONS = 30
PRIOR_WEIGHT = 0.5  # chosen on the simulated user of bench/bench_feedback.py
PROJECTION_SAMPLE = 10_000  # rows the PCA is fitted on; every row is then projected


# --- marks -----------------------------------------------------------------------------------


def split_marks(marks: Mapping[int, int]) -> tuple[Positions, Positions]:
    """{position: +1 or -1} -> (relevant, irrelevant) positions."""
    relevant, irrelevant = [], []
    for index, mark in marks.items():
        if mark == 1:
            relevant.append(int(index))
        elif mark == -1:
            irrelevant.append(int(index))
        else:
            raise QueryError(
                f"a mark is +1 (relevant) or -1 (irrelevant), not {mark!r} (frame {index})"
            )
    return np.array(relevant, np.int64), np.array(irrelevant, np.int64)


def _positions(marks: Iterable[int]) -> np.ndarray:
    arr = np.asarray(marks if isinstance(marks, np.ndarray) else list(marks))
    return np.unique(arr.ravel()) if len(arr) else np.zeros(0, np.int64)


def check_marks(
    n: int, relevant: Iterable[int] = (), irrelevant: Iterable[int] = ()
) -> tuple[Positions, Positions]:
    """Validated, de-duplicated (relevant, irrelevant) positions into a scope of n frames."""
    rel, irr = _positions(relevant), _positions(irrelevant)
    if not len(rel) and not len(irr):
        raise QueryError("mark at least one frame as relevant or irrelevant, then refine")
    for name, arr in (("relevant", rel), ("irrelevant", irr)):
        if len(arr) and not np.issubdtype(arr.dtype, np.integer):
            raise QueryError(f"{name} marks must be frame positions (integers), not {arr.dtype}")
        bad = arr[(arr < 0) | (arr >= n)]
        if len(bad):
            raise QueryError(
                f"{name} mark {int(bad[0])} is out of range: the scope has {n} frames (0..{n - 1})"
            )
    both = np.intersect1d(rel, irr)
    if len(both):
        shown = ", ".join(str(int(i)) for i in both[:5])
        raise QueryError(
            f"frame {shown} is marked both relevant and irrelevant: keep one of the two marks"
        )
    return rel.astype(np.int64), irr.astype(np.int64)


# --- the kNN graph ---------------------------------------------------------------------------


def _knn_by_lists(vectors: np.ndarray, k: int, lists: int, seed: int):
    """Approximate (n, k) cosines and positions of each row's k nearest rows, self included.

    Spherical k-means splits the rows into lists (as an IVF index does); the rows of each list
    are then searched exactly, in one matrix product, against the rows of the `lists` lists
    nearest to its centroid (its own included). Searching a whole list at once, rather than
    each row through an IVF index, turns the work into large BLAS products: several times
    faster for the same recall.
    """
    n, dim = vectors.shape
    nlist = choose_nlist(n)
    rng = np.random.default_rng(seed)
    kmeans = faiss.Kmeans(dim, nlist, niter=10, seed=seed, spherical=True)
    kmeans.cp.max_points_per_centroid = 64
    kmeans.train(vectors[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))])
    _, assign = kmeans.index.search(vectors, 1)
    assign = assign.ravel()
    _, near = faiss.knn(
        kmeans.centroids, kmeans.centroids, min(lists, nlist), metric=faiss.METRIC_INNER_PRODUCT
    )
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(nlist + 1))
    sims = np.full((n, k + 1), -np.inf, np.float32)
    found = np.full((n, k + 1), -1, np.int64)
    for c in range(nlist):
        rows = order[bounds[c] : bounds[c + 1]]
        if not len(rows):
            continue
        cand = np.concatenate([order[bounds[j] : bounds[j + 1]] for j in near[c] if j >= 0])
        m = min(k + 1, len(cand))
        s, pos = faiss.knn(vectors[rows], vectors[cand], m, metric=faiss.METRIC_INNER_PRODUCT)
        sims[rows, :m] = s
        found[rows, :m] = cand[pos]
    return sims, found


def _knn(vectors: np.ndarray, k: int, exact_limit: int, seed: int):
    """(n, k) cosines and positions of each row's k nearest other rows; position -1 if not found.

    Exact up to `exact_limit` rows, else `_knn_by_lists`. Both return exact inner products for
    the neighbours they find, so the edge weights are exact even when the search is not.
    """
    n = len(vectors)
    if n <= exact_limit:
        sims, found = faiss.knn(vectors, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        sims, found = _knn_by_lists(vectors, k, GRAPH_LISTS, seed)
    # Drop each row's self (usually first, but not always with duplicates or an approximate
    # index) and keep the first k others in order of similarity.
    keep = (found != np.arange(n)[:, None]) & (found >= 0)
    slot = np.cumsum(keep, axis=1) - 1
    keep &= slot < k
    rows, cols = np.nonzero(keep)
    out_pos = np.full((n, k), -1, np.int64)
    out_sim = np.zeros((n, k), np.float32)
    out_pos[rows, slot[rows, cols]] = found[rows, cols]
    out_sim[rows, slot[rows, cols]] = sims[rows, cols]
    return out_sim, out_pos


def build_knn_graph(
    vectors: Vectors,
    k: int = DEFAULT_K,
    *,
    weights: str = HEAT,
    symmetric: bool = True,
    exact_limit: int = EXACT_LIMIT,
    seed: int = 0,
) -> sparse.csr_matrix:
    """Sparse kNN affinity graph W (n, n) over unit vectors, float32, no self loops.

    Each row links to its k most similar other rows (FAISS: exact inner product up to
    `exact_limit` rows, else searched list by list over a k-means partition, see
    `_knn_by_lists`; the cosines of the edges found are exact either way). `weights`:

    - "heat" (default): exp(-|xi - xj|^2 / s2), s2 the mean squared distance over all kNN edges.
      One global bandwidth taken from the data: near-duplicate frames weigh ~1, a typical
      neighbour e^-1, and a far "neighbour" (an outlier's) little, so the graph follows dense
      scenes rather than the k-th link of a lonely frame.
    - "cosine": max(cos, 0).
    - "connectivity": 1 for every edge (scikit-learn's kneighbors_graph).

    symmetric=True makes W = max(W, W.T): i and j are linked when either is among the other's
    k nearest, so rows have k or more entries. symmetric=False keeps the directed kNN graph.
    """
    if weights not in (HEAT, COSINE, CONNECTIVITY):
        raise ValueError(f"weights must be {HEAT!r}, {COSINE!r} or {CONNECTIVITY!r}")
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    sims, neighbours = _knn(x, k, exact_limit, seed)
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = neighbours.ravel()
    ok = cols >= 0
    rows, cols = rows[ok], cols[ok]
    cos = np.clip(sims.ravel()[ok], -1.0, 1.0)
    if weights == HEAT:
        dist2 = 2.0 - 2.0 * cos
        s2 = max(float(dist2.mean()), 1e-6)
        w = np.exp(-dist2 / s2).astype(np.float32)
    elif weights == COSINE:
        w = np.maximum(cos, 0.0)
    else:
        w = np.ones(len(rows), np.float32)
    graph = sparse.csr_matrix((w, (rows, cols)), shape=(n, n), dtype=np.float32)
    if symmetric:
        graph = graph.maximum(graph.T).tocsr()
    graph.eliminate_zeros()
    graph.sort_indices()
    return graph


def scope_key(model_key: str, ids) -> str:
    """Names a scope by its model and the set of its ids (order does not matter)."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    digest = hashlib.blake2b(ids.tobytes(), digest_size=16)
    digest.update(model_key.encode())
    return f"{model_key}:{len(ids)}:{digest.hexdigest()}"


class GraphCache:
    """Small in-memory LRU of kNN graphs per (scope, k), shared by all sessions of the app.

    A graph over 1M frames takes a minute or more to build and ~230 MB to keep (with its
    propagation operator, see `prepare`), so refining the same scope again reuses it, and at
    most `max_graphs` are kept. Concurrent requests for the same scope
    wait for one build instead of each building it.
    """

    def __init__(self, max_graphs: int = 4) -> None:
        self.max_graphs = max_graphs
        self._lock = threading.Lock()
        self._graphs: OrderedDict[tuple, tuple[np.ndarray, sparse.csr_matrix]] = OrderedDict()
        self._building: dict[tuple, threading.Lock] = {}
        self.builds = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._graphs)

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()

    def _lookup(self, key: tuple, ids: np.ndarray) -> sparse.csr_matrix | None:
        with self._lock:
            entry = self._graphs.get(key)
            if entry is None:
                return None
            self._graphs.move_to_end(key)
        built_ids, graph = entry
        if np.array_equal(built_ids, ids):
            return graph
        # Same scope listed in another order: reorder the nodes rather than rebuild.
        sorter = np.argsort(built_ids)
        where = sorter[np.searchsorted(built_ids, ids, sorter=sorter)]
        return graph[where][:, where].tocsr()

    def get(
        self, model_key: str, ids, vectors: Vectors, k: int = DEFAULT_K, **build_options
    ) -> sparse.csr_matrix:
        """The graph over `vectors` (row i is the frame with ids[i], ids distinct), built on a miss."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        key = (scope_key(model_key, ids), k, tuple(sorted(build_options.items())))
        graph = self._lookup(key, ids)
        if graph is not None:
            return graph
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:
            graph = self._lookup(key, ids)  # built by another session while we waited
            if graph is not None:
                return graph
            try:
                graph = build_knn_graph(vectors, k, **build_options)
                prepare(graph)
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:  # cached before its build lock goes: no window for a second build
                self._graphs[key] = (ids.copy(), graph)
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
                self._building.pop(key, None)
                self.builds += 1
        return graph


GRAPHS = GraphCache()


# --- label propagation -----------------------------------------------------------------------


def normalized_graph(graph: sparse.spmatrix) -> sparse.csr_matrix:
    """S = D^-1/2 W D^-1/2 with the diagonal of W ignored.

    D holds column sums (in-degrees), as scipy's normalized Laplacian, and so scikit-learn's
    LabelSpreading, uses; for the symmetric graphs build_knn_graph makes they equal the row
    sums. A node with degree 0 keeps 1, as in scipy, so nothing divides by zero.
    """
    w = sparse.csr_matrix(graph, dtype=np.float32, copy=True)
    rows = np.repeat(np.arange(w.shape[0]), np.diff(w.indptr))
    w.data[rows == w.indices] = 0.0
    degree = np.bincount(w.indices, weights=w.data, minlength=w.shape[1])
    degree[degree == 0] = 1.0
    inv_sqrt = (1.0 / np.sqrt(degree)).astype(np.float32)
    w.data *= inv_sqrt[rows] * inv_sqrt[w.indices]
    w.eliminate_zeros()
    return w


@dataclass(frozen=True)
class _Operator:
    """S = normalized_graph(W) with nodes renumbered in `order` (reverse Cuthill-McKee).

    In that order a node's neighbours sit close to it in memory, so the sparse products of the
    iteration read mostly from cache: ~3.5x faster at 1M nodes, where the scope's own order
    scatters them over a 4 MB vector.
    """

    s: sparse.csr_matrix  # (n, n) S[order][:, order]
    order: NDArray[np.int64]  # (n,) scope positions in the renumbered order


_operators: dict[int, _Operator] = {}
_operators_lock = threading.Lock()


def prepare(graph: sparse.spmatrix) -> _Operator:
    """The propagation operator of `graph`, made once per graph object and kept while it lives.

    Graphs are treated as immutable: change one in place and this goes stale. GraphCache calls
    this right after a build, so the first refinement of a scope does not pay for it (~1 s at
    1M frames).
    """
    key = id(graph)
    with _operators_lock:
        op = _operators.get(key)
    if op is not None:
        return op
    s = normalized_graph(graph)
    order = reverse_cuthill_mckee(s, symmetric_mode=True).astype(np.int64)
    op = _Operator(s[order][:, order].tocsr(), order)
    with _operators_lock:
        if key not in _operators:
            _operators[key] = op
            # ids are reused once an object is gone: forget the operator with its graph
            weakref.finalize(graph, _operators.pop, key, None)
        return _operators[key]


def propagate(
    graph: sparse.spmatrix, seeds: np.ndarray, alpha: float = ALPHA, iterations: int = ITERATIONS
) -> np.ndarray:
    """Zhou et al.'s iteration F <- alpha S F + (1 - alpha) Y from F = Y; Y is (n,) or (n, c).

    Like LabelSpreading it runs a fixed number of sweeps rather than to convergence: with
    alpha=0.99, 30 sweeps spread the seeds ~30 hops, plenty to cover a scene in a kNN graph.
    """
    if not 0.0 < alpha < 1.0:
        raise QueryError(f"alpha must be between 0 and 1 (exclusive), not {alpha}")
    op = prepare(graph)
    y = np.asarray(seeds, dtype=np.float32)[op.order]
    static = (1.0 - alpha) * y
    f = y.copy()
    for _ in range(iterations):
        f = op.s @ f
        f *= alpha
        f += static
    out = np.empty_like(f)
    out[op.order] = f
    return out


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def label_propagation(
    graph: sparse.spmatrix,
    relevant: Iterable[int] = (),
    irrelevant: Iterable[int] = (),
    prior: Scores | None = None,
    *,
    alpha: float = ALPHA,
    prior_weight: float = PRIOR_WEIGHT,
    iterations: int = ITERATIONS,
) -> Scores:
    """Scores (n,) from marks spread over the graph, mixed with the query scores `prior`.

    Y has a column for the relevant marks and one for the irrelevant ones, each summing to 1
    (1/count at each mark), and the score is F_rel - F_irr. Giving each class the same mass keeps
    a typical top-20 feedback (say 4 relevant, 16 irrelevant) from being drowned by its
    irrelevant marks; on the simulated user of bench/bench_feedback.py it adds ~2 points of
    precision@20 after 3 rounds over 1 per mark. The iteration is linear, so the difference is
    propagated as one column Y_rel - Y_irr: half the sparse products of running both.

    The query is kept as a prior in the final scores: score = lp / m + prior_weight * q, where
    m is the largest |lp| among unmarked frames and q the min-max normalized query scores. So
    prior_weight=1 makes the best query hit count as much as the best propagated frame;
    prior_weight=0 is pure label propagation. Mixing after propagation, rather than injecting the
    query into Y, keeps the query's own ranking intact: injected, it would be smoothed over the
    graph like the marks, and a large weight would not return the plain query ranking. It also
    orders frames the marks never reach (lp ~ 0) by the query instead of by noise.
    """
    n = graph.shape[0]
    rel, irr = check_marks(n, relevant, irrelevant)
    if prior_weight < 0:
        raise QueryError(f"prior weight must be 0 or more, not {prior_weight}")
    y = np.zeros(n, np.float32)
    if len(rel):
        y[rel] = 1.0 / len(rel)
    if len(irr):
        y[irr] = -1.0 / len(irr)
    lp = propagate(graph, y, alpha, iterations)
    unmarked = np.ones(n, bool)
    unmarked[rel] = unmarked[irr] = False
    scale = float(np.abs(lp[unmarked] if unmarked.any() else lp).max(initial=0.0))
    scores = lp / scale if scale > 0 else lp
    if prior is not None and prior_weight > 0:
        prior = np.asarray(prior, dtype=np.float32)
        if prior.shape != (n,):
            raise QueryError(f"query scores have shape {prior.shape}, expected ({n},)")
        scores = scores + np.float32(prior_weight) * _minmax(prior)
    return scores.astype(np.float32, copy=False)


# --- Rocchio ---------------------------------------------------------------------------------


def rocchio(
    query_vector: Vector,
    vectors: Vectors,
    relevant: Iterable[int] = (),
    irrelevant: Iterable[int] = (),
    *,
    a: float = 1.0,
    b: float = 0.75,
    c: float = 0.15,
) -> tuple[Vector, Scores]:
    """q' = a q + b mean(relevant) - c mean(irrelevant), unit-normalized; scores = vectors @ q'."""
    rel, irr = check_marks(len(vectors), relevant, irrelevant)
    q = a * np.asarray(query_vector, dtype=np.float32).ravel()
    if len(rel):
        q = q + b * vectors[rel].mean(axis=0)
    if len(irr):
        q = q - c * vectors[irr].mean(axis=0)
    norm = float(np.linalg.norm(q))
    if norm < 1e-8:
        raise QueryError("the marks cancel the query out: mark other frames or fewer irrelevant")
    q = (q / norm).astype(np.float32)
    return q, np.asarray(vectors @ q, dtype=np.float32)


# --- what the page shows ---------------------------------------------------------------------


def ranking(scores: Scores) -> Positions:
    """Positions best first (ties keep scope order)."""
    return np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable").astype(np.int64)


@dataclass(frozen=True)
class Refinement:
    """A re-ranked scope: `order` lists positions best first, `scores` is per position."""

    method: str
    order: Positions  # (n,)
    scores: Scores  # (n,)
    query_vector: Vector | None = None  # Rocchio's moved query; None for propagation


def refine(
    method: str,
    marks: Mapping[int, int],
    query_scores: Scores,
    *,
    graph: sparse.spmatrix | None = None,
    vectors: Vectors | None = None,
    query_vector: Vector | None = None,
    prior_weight: float = PRIOR_WEIGHT,
    alpha: float = ALPHA,
    pin_marks: bool = True,
) -> Refinement:
    """Re-rank every frame of the scope from `marks` ({position: +1/-1}).

    propagation needs `graph`; rocchio needs `vectors` and `query_vector`. With pin_marks the
    frames marked relevant come first and those marked irrelevant last, as the user said.
    """
    rel, irr = split_marks(marks)
    query_scores = np.asarray(query_scores, dtype=np.float32)
    moved_query = None
    if method == PROPAGATION:
        if graph is None:
            raise ValueError("label propagation needs the scope's graph")
        scores = label_propagation(
            graph, rel, irr, query_scores, alpha=alpha, prior_weight=prior_weight
        )
    elif method == ROCCHIO:
        if vectors is None or query_vector is None:
            raise ValueError("Rocchio needs the scope's vectors and the query vector")
        moved_query, scores = rocchio(query_vector, vectors, rel, irr)
    else:
        raise QueryError(f"unknown feedback method {method!r}: use one of {', '.join(METHODS)}")
    order = ranking(scores)
    if pin_marks:
        group = np.ones(len(scores), np.int8)
        group[rel], group[irr] = 0, 2
        order = order[np.argsort(group[order], kind="stable")]
    return Refinement(method, order, scores, moved_query)


@dataclass(frozen=True)
class RankChanges:
    """How the shown top-k moved from one ranking to the next (ranks are 0-based)."""

    shown: Positions  # (k,) positions in the new top-k, best first
    before: NDArray[np.int64]  # (k,) rank of each in the previous ranking
    dropped: Positions  # positions in the previous top-k that left it

    @property
    def delta(self) -> NDArray[np.int64]:
        """(k,) places moved up (> 0) or down (< 0) for each shown position."""
        return self.before - np.arange(len(self.shown))


def rank_changes(before: Positions, after: Positions, top_k: int) -> RankChanges:
    """Compare two full rankings (positions best first) over the same scope, for the top-k."""
    before, after = np.asarray(before, np.int64), np.asarray(after, np.int64)
    if len(before) != len(after):
        raise ValueError(f"rankings of {len(before)} and {len(after)} frames")
    rank = np.empty(len(before), np.int64)
    rank[before] = np.arange(len(before))
    shown = after[:top_k]
    dropped = np.setdiff1d(before[:top_k], shown, assume_unique=True)
    dropped = dropped[np.argsort(rank[dropped])]
    return RankChanges(shown, rank[shown], dropped)


def project_2d(
    vectors: Vectors, *, max_points: int = PROJECTION_SAMPLE, seed: int = 0
) -> NDArray[np.float32]:
    """(n, 2) coordinates on the first two principal axes, for a scatter plot.

    The axes come from at most `max_points` sampled rows (a million rows would take long and add
    nothing to two axes); every row is then projected. Signs are fixed so that the
    same vectors always give the same picture.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    sample = x
    if n > max_points:
        sample = x[np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))]
    mean = sample.mean(axis=0)
    centred = sample - mean
    # The principal axes (right singular vectors of the centred rows) are the singular vectors of
    # their (dim, dim) scatter matrix: an SVD of that is far cheaper than one of 10k rows.
    u, _, _ = np.linalg.svd(centred.T @ centred, hermitian=True)
    axes = np.zeros((x.shape[1], 2), np.float32)
    take = min(2, u.shape[1])
    axes[:, :take] = u[:, :take]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    axes *= np.where(signs == 0, 1, signs)
    # x @ axis - mean @ axis, not (x - mean) @ axes: no centred copy of a million rows; and two
    # matrix-vector products, which BLAS runs ~2x faster than one (n, dim) @ (dim, 2) product.
    coords = np.column_stack([x @ axes[:, 0], x @ axes[:, 1]]) - mean @ axes
    return coords.astype(np.float32)
