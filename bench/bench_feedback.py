"""Relevance feedback: re-rank latency at 10k, 100k and 1M frames, and a simulated user's precision.

(c) latency. For each size, on synthetic clustered 512-d unit vectors (see `ClusteredFrames`):
    graph     `build_knn_graph` through a fresh `GraphCache` (exact kNN up to 20k frames, above
              that searched list by list over a k-means partition), reported apart: build time
              (kNN search, weights and the propagation operator, `fb.prepare`), edges, kNN recall@10 of the graph against exact search on 200 sampled frames, and
              the time of a cache hit (hashing the scope's ids).
    refine    per refinement: a new query (a stored vector plus noise), the user marks its top-20
              (a random 5 relevant, 15 irrelevant); timed, interleaved query by query so that load
              from other processes hits all alike: `label_propagation` alone (normalizing the
              graph, 30 sparse products, mixing the prior), `refine(propagation)` end to end (that
              plus the full ranking, pinned marks and the rank changes of the top 50), and the
              same two for Rocchio, the baseline. p50 and p95 over the refinements.
    map       `project_2d` over the scope (PCA fitted on 10k sampled rows).
    Target: refine(propagation) p50 <= 300 ms at 100k.

(d) a simulated user. 20k frames drawn from 400 clusters (unequal sizes) in 40 topics. Each task
    has a target concept, one cluster plus 0-2 sibling clusters of its topic (30 to 600 frames),
    and a query vector that points only weakly at it: the target's mean direction plus random
    noise 5x its norm, so plain precision@20 is ~0.25. Each round the user looks at the top 20 of
    the current ranking and marks every frame not yet marked, relevant or irrelevant by ground
    truth; then the scope is refined with all marks so far (marked frames pinned: relevant first,
    irrelevant last). Reported after 0 (the plain query) to 3 rounds, averaged over the tasks:
      P@20 shown  precision of the top 20 the user now sees (includes pinned relevant marks)
      P@20 new    precision of the top 20 unmarked frames: what feedback found that was not given
    Methods: Rocchio (a=1, b=0.75, c=0.15), label propagation with the default prior weight, and
    a sweep of prior weights (0 = pure propagation). The data, the sample and the tasks use seeds
    other than those the defaults were chosen on.

Run:  .venv/bin/python bench/bench_feedback.py [--sizes 10000 100000 1000000] [--refinements 15]
      [--tasks 60] [--sim-n 20000]
Writes bench/results/feedback.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import scipy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.search import feedback as fb  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DIM, SHOWN, ROUNDS, TOP_K_SHOWN = 512, 20, 3, 50
TARGET_MS, TARGET_N = 300.0, 100_000
QUERY_NOISE = 5.0
PRIOR_SWEEP = (0.0, 0.25, 1.0, 2.0)


class ClusteredFrames:
    """Unit vectors with CLIP-like structure, each labelled with its cluster.

    A direction shared by all (unrelated photos still have cosine ~0.4 in CLIP), topic centres,
    cluster centres inside topics, a 16-d local subspace per cluster with a decaying spectrum, and
    isotropic noise; unit-normalized. Cosines: random pair ~0.4, same cluster ~0.7.
    """

    def __init__(
        self,
        topics: int,
        clusters: int,
        seed: int,
        dim: int = DIM,
        local_dim: int = 16,
        # shares of the squared norm before normalizing: shared, topic, cluster, local, noise
        shares: tuple[float, ...] = (0.40, 0.15, 0.15, 0.20, 0.10),
    ) -> None:
        rng = np.random.default_rng(seed)
        shared, s_topic, s_cluster, s_local, s_noise = shares
        mean = rng.standard_normal(dim)
        mean /= np.linalg.norm(mean)
        topic_centres = rng.standard_normal((topics, dim)) * np.sqrt(s_topic / dim)
        self.topic = rng.integers(0, topics, clusters)
        self.centres = (
            np.sqrt(shared) * mean
            + topic_centres[self.topic]
            + rng.standard_normal((clusters, dim)) * np.sqrt(s_cluster / dim)
        ).astype(np.float32)
        spectrum = 1.0 / np.arange(1, local_dim + 1)
        spectrum *= s_local / spectrum.sum()
        bases = rng.standard_normal((clusters, local_dim, dim)) / np.sqrt(dim)
        self.bases = (bases * np.sqrt(spectrum)[None, :, None]).astype(np.float32)
        weights = rng.lognormal(0.0, 1.0, clusters)
        self.weights = weights / weights.sum()
        self.noise = np.float32(np.sqrt(s_noise / dim))
        self.dim, self.local_dim = dim, local_dim

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) unit vectors in random order and their (n,) cluster labels."""
        rng = np.random.default_rng(seed)
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, self.dim), np.float32)
        step = 100_000  # bounds the temporaries at 1M frames
        for start in range(0, n, step):
            block = out[start : start + step]
            lab = labels[start : start + step]
            block[:] = rng.standard_normal(block.shape, dtype=np.float32)
            block *= self.noise
            block += self.centres[lab]
            local = rng.standard_normal((len(lab), self.local_dim), dtype=np.float32)
            order = np.argsort(lab, kind="stable")
            bounds = np.flatnonzero(np.diff(lab[order])) + 1
            for group in np.split(order, bounds):
                block[group] += local[group] @ self.bases[lab[group[0]]]
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out, labels


def _pct(times_s: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(times_s) * 1e3, q)), 1)


def _noisy_query(rng, direction: np.ndarray, noise: float) -> np.ndarray:
    q = direction / np.linalg.norm(direction)
    r = rng.standard_normal(len(q)).astype(np.float32)
    q = q + noise * r / np.linalg.norm(r)
    return (q / np.linalg.norm(q)).astype(np.float32)


# --- (c) latency -------------------------------------------------------------------------------


def bench_latency(n: int, refinements: int) -> dict:
    data = ClusteredFrames(topics=100, clusters=2000, seed=20)
    vectors, _ = data.sample(n, seed=21 + n)
    ids = np.random.default_rng(3).permutation(n).astype(np.int64) + 1
    cache = fb.GraphCache()

    t = time.perf_counter()
    graph = cache.get("bench", ids, vectors)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    assert cache.get("bench", ids, vectors) is graph
    hit_ms = (time.perf_counter() - t) * 1e3

    rng = np.random.default_rng(4)
    probe = rng.choice(n, size=200, replace=False)
    _, exact = faiss.knn(
        vectors[probe], vectors, fb.DEFAULT_K + 1, metric=faiss.METRIC_INNER_PRODUCT
    )
    recall = float(
        np.mean(
            [
                len(set(graph[p].indices) & set(e[e != p][: fb.DEFAULT_K])) / fb.DEFAULT_K
                for p, e in zip(probe, exact, strict=True)
            ]
        )
    )

    lp, lp_refine, ro, ro_refine = [], [], [], []
    for i in range(refinements + 1):  # the first is a warm-up
        q = _noisy_query(rng, vectors[rng.integers(n)], 1.0)
        query_scores = vectors @ q
        top = fb.ranking(query_scores)[:SHOWN]
        rel = rng.choice(top, size=5, replace=False)
        irr = np.setdiff1d(top, rel)
        marks = {int(p): 1 for p in rel} | {int(p): -1 for p in irr}
        before = fb.ranking(query_scores)

        t = time.perf_counter()
        fb.label_propagation(graph, rel, irr, query_scores)
        t1 = time.perf_counter()
        result = fb.refine(fb.PROPAGATION, marks, query_scores, graph=graph)
        fb.rank_changes(before, result.order, TOP_K_SHOWN)
        t2 = time.perf_counter()
        fb.rocchio(q, vectors, rel, irr)
        t3 = time.perf_counter()
        result = fb.refine(fb.ROCCHIO, marks, query_scores, vectors=vectors, query_vector=q)
        fb.rank_changes(before, result.order, TOP_K_SHOWN)
        t4 = time.perf_counter()
        if i:
            lp.append(t1 - t)
            lp_refine.append(t2 - t1)
            ro.append(t3 - t2)
            ro_refine.append(t4 - t3)

    t = time.perf_counter()
    fb.project_2d(vectors)
    map_ms = (time.perf_counter() - t) * 1e3

    row = {
        "n": n,
        "graph": "exact" if n <= fb.EXACT_LIMIT else f"k-means lists x{fb.GRAPH_LISTS}",
        "graph_build_s": round(build_s, 1),
        "graph_edges": int(graph.nnz),
        "graph_mb": round(
            (graph.data.nbytes + graph.indices.nbytes + graph.indptr.nbytes) / 2**20, 1
        ),
        "graph_recall_at_10": round(recall, 3),
        "cache_hit_ms": round(hit_ms, 1),
        "lp_p50_ms": _pct(lp, 50),
        "lp_p95_ms": _pct(lp, 95),
        "lp_refine_p50_ms": _pct(lp_refine, 50),
        "lp_refine_p95_ms": _pct(lp_refine, 95),
        "rocchio_p50_ms": _pct(ro, 50),
        "rocchio_p95_ms": _pct(ro, 95),
        "rocchio_refine_p50_ms": _pct(ro_refine, 50),
        "rocchio_refine_p95_ms": _pct(ro_refine, 95),
        "project_2d_ms": round(map_ms, 1),
        "refinements": refinements,
    }
    del graph, vectors, cache
    gc.collect()
    return row


# --- (d) simulated user ------------------------------------------------------------------------


def make_tasks(data: ClusteredFrames, labels: np.ndarray, vectors, count: int, seed: int):
    """(target mask, query vector) pairs: 1-3 clusters of one topic, a weakly pointing query."""
    rng = np.random.default_rng(seed)
    sizes = np.bincount(labels, minlength=len(data.weights))
    tasks = []
    while len(tasks) < count:
        c = int(rng.integers(len(sizes)))
        if sizes[c] < 15:
            continue
        siblings = [s for s in np.flatnonzero(data.topic == data.topic[c]) if s != c and sizes[s]]
        extra = rng.choice(
            siblings, size=min(len(siblings), int(rng.integers(0, 3))), replace=False
        )
        target = np.isin(labels, [c, *extra.tolist()])
        if not 30 <= target.sum() <= 600:
            continue
        tasks.append((target, _noisy_query(rng, vectors[target].mean(0), QUERY_NOISE)))
    return tasks


def _precisions(order: np.ndarray, target: np.ndarray, marked: set[int]) -> tuple[float, float]:
    shown = float(target[order[:SHOWN]].mean())
    fresh = [p for p in order[: SHOWN + len(marked)] if int(p) not in marked][:SHOWN]
    return shown, float(target[fresh].mean())


def simulate(vectors, graph, target, query, method: str, **options) -> np.ndarray:
    """(ROUNDS + 1, 2): P@20 shown and new, for the plain query then after each round."""
    query_scores = vectors @ query
    order = fb.ranking(query_scores)
    marks: dict[int, int] = {}
    out = [_precisions(order, target, set())]
    for _ in range(ROUNDS):
        for p in order[:SHOWN]:
            marks.setdefault(int(p), 1 if target[p] else -1)
        result = fb.refine(
            method,
            marks,
            query_scores,
            graph=graph,
            vectors=vectors,
            query_vector=query,
            **options,
        )
        order = result.order
        out.append(_precisions(order, target, set(marks)))
    return np.array(out)


def bench_user(n: int, tasks_count: int) -> dict:
    data = ClusteredFrames(topics=40, clusters=400, seed=100)
    vectors, labels = data.sample(n, seed=101)
    graph = fb.build_knn_graph(vectors)
    tasks = make_tasks(data, labels, vectors, tasks_count, seed=102)
    methods = {
        "rocchio": (fb.ROCCHIO, {}),
        f"propagation (prior {fb.PRIOR_WEIGHT:g}, default)": (fb.PROPAGATION, {}),
    }
    for w in PRIOR_SWEEP:
        label = "pure propagation (prior 0)" if w == 0 else f"propagation (prior {w:g})"
        methods[label] = (fb.PROPAGATION, {"prior_weight": w})
    rows = {}
    for name, (method, options) in methods.items():
        runs = np.array([simulate(vectors, graph, t, q, method, **options) for t, q in tasks])
        mean = runs.mean(axis=0)
        rows[name] = {
            "p20_shown": [round(float(v), 3) for v in mean[:, 0]],
            "p20_new": [round(float(v), 3) for v in mean[:, 1]],
        }
    sizes = [int(t.sum()) for t, _ in tasks]
    return {
        "n": n,
        "clusters": 400,
        "topics": 40,
        "tasks": len(tasks),
        "target_size_median": int(np.median(sizes)),
        "query_noise": QUERY_NOISE,
        "rounds": ROUNDS,
        "shown": SHOWN,
        "methods": rows,
    }


# --- output ------------------------------------------------------------------------------------


def latency_table(rows: list[dict]) -> str:
    lines = [
        "| frames | graph | build s | edges | recall@10 | cache hit ms | LP p50 ms | "
        "LP refine p50 / p95 ms | Rocchio p50 ms | Rocchio refine p50 / p95 ms | 2-D map ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['graph']} | {r['graph_build_s']} | {r['graph_edges']:,} | "
            f"{r['graph_recall_at_10']} | {r['cache_hit_ms']} | {r['lp_p50_ms']} | "
            f"{r['lp_refine_p50_ms']} / {r['lp_refine_p95_ms']} | {r['rocchio_p50_ms']} | "
            f"{r['rocchio_refine_p50_ms']} / {r['rocchio_refine_p95_ms']} | {r['project_2d_ms']} |"
        )
    return "\n".join(lines)


def user_table(user: dict) -> str:
    rounds = range(user["rounds"] + 1)
    head = " | ".join(f"round {r}" if r else "query" for r in rounds)
    lines = [
        f"| method | {head} (P@20 shown / new) |",
        "|---|" + "---:|" * (user["rounds"] + 1),
    ]
    for name, m in user["methods"].items():
        cells = " | ".join(
            f"{m['p20_shown'][r]:.3f}"
            if r == 0
            else f"{m['p20_shown'][r]:.3f} / {m['p20_new'][r]:.3f}"
            for r in rounds
        )
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--refinements", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--sim-n", type=int, default=20_000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-user", action="store_true")
    args = parser.parse_args()
    print(
        f"faiss {faiss.__version__}, scipy {scipy.__version__}, "
        f"{faiss.omp_get_max_threads()} OpenMP threads, {os.cpu_count()} CPUs",
        flush=True,
    )

    rows = []
    if not args.skip_latency:
        for n in args.sizes:
            rows.append(bench_latency(n, args.refinements))
            print(json.dumps(rows[-1]), flush=True)
        print("\n(c) re-rank latency\n" + latency_table(rows), flush=True)

    user = None
    if not args.skip_user:
        user = bench_user(args.sim_n, args.tasks)
        print(
            f"\n(d) simulated user: {user['n']:,} frames, {user['tasks']} tasks, target median "
            f"{user['target_size_median']} frames\n" + user_table(user),
            flush=True,
        )

    verdict = None
    at_target = [r for r in rows if r["n"] == TARGET_N]
    if at_target:
        p50 = at_target[0]["lp_refine_p50_ms"]
        verdict = {"n": TARGET_N, "target_ms": TARGET_MS, "p50_ms": p50, "met": p50 <= TARGET_MS}
        print(
            f"refine(propagation) p50 at {TARGET_N:,}: {p50} ms (target <= {TARGET_MS:g}): "
            f"{'met' if verdict['met'] else 'MISSED'}"
        )

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "feedback",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "faiss": faiss.__version__,
            "scipy": scipy.__version__,
            "omp_threads": faiss.omp_get_max_threads(),
        },
        "settings": {
            "k": fb.DEFAULT_K,
            "exact_limit": fb.EXACT_LIMIT,
            "graph_lists": fb.GRAPH_LISTS,
            "alpha": fb.ALPHA,
            "iterations": fb.ITERATIONS,
            "prior_weight": fb.PRIOR_WEIGHT,
        },
        "latency": rows,
        "latency_target": verdict,
        "simulated_user": user,
    }
    path = RESULTS / "feedback.json"
    if path.exists() and (args.skip_latency or args.skip_user):
        old = json.loads(path.read_text())  # a partial run keeps the other half's results
        for key in ("latency", "latency_target", "simulated_user"):
            if not out[key] and old.get(key):
                out[key] = old[key]
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
