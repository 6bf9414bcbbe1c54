"""Zero-shot classification: throughput with and without the label-embedding cache, and the cost
of a where-in-the-image map by method.

Model: full-size ViT-B-32 with random weights (`open_clip.create_model("ViT-B-32",
pretrained=None)`, seeded): the same compute as the real model, meaningless outputs.

(a) throughput. 500 real photos (the shared images, cycled; every one decoded from its file),
    20 labels x 10 templates = 200 prompts, batches of 16. Each mode times the whole path: decode
    and preprocess, image tower, text, scoring.
      cached           `core.zeroshot` as shipped: `embed_images` then `classify` per batch; the
                       200 prompts are encoded once (the first batch pays it) and the ensembled
                       label matrix is a cache hit for every later batch.
      library path     as `classify_folder` does it: one `embed_images` call over all 500 (its
                       loader threads run on across batches), then one `classify`.
      naive per batch  the same images, but every batch re-tokenizes and re-encodes the 200
                       prompts with the text tower (what code that builds the text side inside
                       its classify call does).
      naive per image  the prompts re-encoded for every image; timed on a subset (a full run would
                       take ~500 text passes) and reported as measured images/s.
    Also: the cold label-embedding cost (200 prompts, empty caches) and a cache hit.
(b) where maps. Per image (5 photos, one warm-up each): `where_map` with "patch" (1 image
    forward pass) and "occlusion" (grid 7: 1 + 49 passes, in batches of 16); median and min.

Run:  .venv/bin/python bench/bench_zeroshot.py [--images 500] [--naive-image-subset 8]
Writes bench/results/zeroshot.json and appends a dated table to bench/README.md (or, when that
file does not exist, bench/README_zeroshot.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import open_clip
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import zeroshot as zs  # noqa: E402
from core.models.clip import ClipEmbedder  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MEDIA = ROOT.parent / "shared" / "media" / "images"
BATCH = 16
LABELS = (
    *zs.LABEL_PRESETS["general"],  # 18
    "traffic light",
    "pedestrian",
)
TEMPLATES = zs.DEFAULT_TEMPLATES  # 10


def build_embedder() -> ClipEmbedder:
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return ClipEmbedder(
        model,
        preprocess,
        open_clip.get_tokenizer("ViT-B-32"),
        key="bench/ViT-B-32/random",
        name="ViT-B-32",
        pretrained="random",
        device="cpu",
        real_weights=False,
        dim=int(open_clip.get_model_config("ViT-B-32")["embed_dim"]),
    )


def image_paths(count: int) -> list[Path]:
    sources = sorted(p for p in MEDIA.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not sources:
        raise SystemExit(f"no shared images in {MEDIA}")
    return [sources[i % len(sources)] for i in range(count)]


def fresh_caches(embedder: ClipEmbedder) -> None:
    zs.clear_label_cache()
    embedder._text_cache.clear()


def naive_label_matrix(embedder: ClipEmbedder) -> np.ndarray:
    """The 200 prompts through the text tower with no cache of any kind, ensembled."""
    prompts = [t.format(label) for label in LABELS for t in TEMPLATES]
    with torch.inference_mode():
        feats = embedder.model.encode_text(embedder.tokenizer(prompts))
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        mean = feats.reshape(len(LABELS), len(TEMPLATES), -1).mean(dim=1)
        return torch.nn.functional.normalize(mean, dim=-1).numpy()


def naive_classify(embedder: ClipEmbedder, vectors: np.ndarray, text: np.ndarray) -> np.ndarray:
    scale = float(embedder.model.logit_scale.detach().exp())
    logits = scale * (vectors @ text.T)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def run_cached(embedder: ClipEmbedder, paths: list[Path]) -> tuple[dict, np.ndarray]:
    fresh_caches(embedder)
    started = time.perf_counter()
    probs = []
    for i in range(0, len(paths), BATCH):
        batch = zs.embed_images(embedder, paths[i : i + BATCH], batch_size=BATCH)
        probs.append(zs.classify(embedder, batch.vectors, LABELS, TEMPLATES).probs)
    seconds = time.perf_counter() - started
    return {
        "images": len(paths),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(paths) / seconds, 2),
    }, np.concatenate(probs)


def run_library_path(embedder: ClipEmbedder, paths: list[Path]) -> tuple[dict, np.ndarray]:
    """As `classify_folder` does it: one `embed_images` over all (its loader threads never stop
    between batches), then one `classify`."""
    fresh_caches(embedder)
    started = time.perf_counter()
    batch = zs.embed_images(embedder, paths, batch_size=BATCH)
    probs = zs.classify(embedder, batch.vectors, LABELS, TEMPLATES).probs
    seconds = time.perf_counter() - started
    return {
        "images": len(paths),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(paths) / seconds, 2),
    }, probs


def run_naive(embedder: ClipEmbedder, paths: list[Path], per: int) -> tuple[dict, np.ndarray]:
    """Text re-encoded every `per` images (BATCH: per batch; 1: per image)."""
    fresh_caches(embedder)
    started = time.perf_counter()
    text_seconds = 0.0
    probs = []
    for i in range(0, len(paths), BATCH):
        vectors = zs.embed_images(embedder, paths[i : i + BATCH], batch_size=BATCH).vectors
        for j in range(0, len(vectors), per):
            t0 = time.perf_counter()
            text = naive_label_matrix(embedder)
            text_seconds += time.perf_counter() - t0
            probs.append(naive_classify(embedder, vectors[j : j + per], text))
    seconds = time.perf_counter() - started
    return {
        "images": len(paths),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(paths) / seconds, 2),
        "text_seconds": round(text_seconds, 3),
    }, np.concatenate(probs)


def label_costs(embedder: ClipEmbedder) -> dict:
    fresh_caches(embedder)
    t0 = time.perf_counter()
    zs.label_embeddings(embedder, LABELS, TEMPLATES)
    cold = time.perf_counter() - t0
    hits = []
    for _ in range(200):
        t0 = time.perf_counter()
        zs.label_embeddings(embedder, LABELS, TEMPLATES)
        hits.append(time.perf_counter() - t0)
    return {
        "prompts": len(LABELS) * len(TEMPLATES),
        "cold_seconds": round(cold, 3),
        "cache_hit_us": round(statistics.median(hits) * 1e6, 1),
    }


def where_costs(embedder: ClipEmbedder, paths: list[Path]) -> dict:
    from PIL import Image

    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    vector = zs.label_embeddings(embedder, LABELS, TEMPLATES)[0]
    out = {}
    for method in zs.WHERE_METHODS:
        zs.where_map(embedder, images[0], vector, method)  # warm-up
        times = []
        for im in images:
            t0 = time.perf_counter()
            heat = zs.where_map(embedder, im, vector, method, grid=7, batch_size=BATCH)
            times.append(time.perf_counter() - t0)
        out[method] = {
            "map_shape": list(heat.shape),
            "forward_passes": zs.where_map_cost(method, 7),
            "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4),
            "maps": len(times),
        }
    return out


def readme_table(result: dict) -> str:
    t = result["throughput"]
    lc = result["label_embeddings"]
    w = result["where_map"]
    cached = t["cached"]["images_per_s"]
    lines = [
        f"### Zero-shot classification ({result['date']})",
        "",
        f"`bench/bench_zeroshot.py`: ViT-B-32 random weights, {result['machine']['cpus']} CPU cores, "
        f"torch threads {result['machine']['torch_threads']}; {t['cached']['images']} real photos "
        f"(decoded from file), {len(LABELS)} labels x {len(TEMPLATES)} templates = "
        f"{lc['prompts']} prompts, batches of {BATCH}.",
        "",
        "| mode | images | seconds | images/s | vs cached |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("cached", "label-embedding cache, classify per batch"),
        ("library_path", "label-embedding cache, one embed_images + classify"),
        ("naive_per_batch", "no cache: prompts re-encoded per batch"),
        ("naive_per_image", "no cache: prompts re-encoded per image"),
    ):
        row = t[name]
        lines.append(
            f"| {label} | {row['images']} | {row['seconds']:.1f} | {row['images_per_s']:.2f} | "
            f"{row['images_per_s'] / cached:.2f}x |"
        )
    lines += [
        "",
        f"Label embeddings: {lc['prompts']} prompts cold {lc['cold_seconds']:.2f} s; cache hit "
        f"{lc['cache_hit_us']:.0f} µs. Cached and naive probabilities agree to "
        f"{t['max_abs_prob_difference']:.1e}.",
        "",
        "| where map | map | forward passes | median s | min s |",
        "|---|---|---:|---:|---:|",
    ]
    for method, row in w.items():
        shape = "x".join(str(v) for v in row["map_shape"])
        lines.append(
            f"| {method} | {shape} | {row['forward_passes']} | {row['median_s']:.3f} | "
            f"{row['min_s']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--naive-image-subset", type=int, default=8)
    parser.add_argument("--where-images", type=int, default=5)
    parser.add_argument("--no-readme", action="store_true", help="do not append to the README")
    args = parser.parse_args()

    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    embedder = build_embedder()
    paths = image_paths(args.images)

    label = label_costs(embedder)
    print(f"label embeddings: {label}")
    cached, cached_probs = run_cached(embedder, paths)
    print(f"cached:          {cached}")
    library, library_probs = run_library_path(embedder, paths)
    print(f"library path:    {library}")
    per_batch, naive_probs = run_naive(embedder, paths, per=BATCH)
    print(f"naive per batch: {per_batch}")
    per_image, _ = run_naive(embedder, paths[: args.naive_image_subset], per=1)
    print(f"naive per image: {per_image}")
    diff = float(
        max(np.abs(cached_probs - naive_probs).max(), np.abs(cached_probs - library_probs).max())
    )

    distinct = sorted(set(paths), key=paths.index)[:: max(1, len(set(paths)) // args.where_images)]
    where = where_costs(embedder, distinct[: args.where_images])
    print(f"where maps: {where}")

    result = {
        "benchmark": "zeroshot",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": Path("/proc/loadavg").read_text().split()[:3],
        },
        "model": "ViT-B-32 (random weights)",
        "batch_size": BATCH,
        "labels": list(LABELS),
        "templates": list(TEMPLATES),
        "label_embeddings": label,
        "throughput": {
            "cached": cached,
            "library_path": library,
            "naive_per_batch": per_batch,
            "naive_per_image": per_image,
            "max_abs_prob_difference": diff,
            "speedup_vs_naive_per_batch": round(
                cached["images_per_s"] / per_batch["images_per_s"], 2
            ),
            "speedup_vs_naive_per_image": round(
                cached["images_per_s"] / per_image["images_per_s"], 2
            ),
        },
        "where_map": where,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "zeroshot.json").write_text(json.dumps(result, indent=2))
    table = readme_table(result)
    print("\n" + table)
    print(f"wrote {RESULTS / 'zeroshot.json'}")
    if not args.no_readme:
        readme = ROOT / "bench" / "README.md"
        if not readme.exists():
            readme = ROOT / "bench" / "README_zeroshot.md"
        with open(readme, "a", encoding="utf-8") as fh:
            fh.write("\n" + table)
        print(f"appended the table to {readme}")


if __name__ == "__main__":
    main()
