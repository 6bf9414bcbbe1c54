"""Zero-shot classification with CLIP: labels in, per-image probabilities out, no training.

Each label becomes a text embedding by prompt ensembling: the label is put into every prompt
template ("a photo of a {}.", "a blurry photo of a {}." ...), each prompt is embedded, and the mean
of those unit vectors, renormalized, stands for the label (it averages out the wording of any one
prompt). An image's scores are its cosine similarities with the label vectors; as in CLIP's
training, `probs` is the softmax over labels of `logit_scale * cosine`, with the model's own
learned `logit_scale`.

Multi-label mode scores every label on its own (see `classify`): a sigmoid with the model's own
bias for sigmoid-trained models (SigLIP), else a two-way softmax of the label against a neutral
"a photo of a thing." prompt ensemble.

Typical use::

    labels, warnings = parse_labels("car, truck\\nbus", embedder)
    batch = embed_images(embedder, paths)              # bad files end up in batch.failed
    result = classify(embedder, batch.vectors, labels)
    result.top_labels, result.probs                    # (n,), (n, n_labels)
    heat = where_map(embedder, image, label_embeddings(embedder, labels)[0])
    overlay(image, heat, 0.5).save("where.png")

Everything raises `QueryError` (bad labels, templates or options) or `MediaError` (an unusable
file) with a message meant for the user.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.errors import MediaError, QueryError
from core.media import (
    IMAGE_EXTENSIONS,
    SUPPORTED_LIST,
    THUMBNAIL_SIZE,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    FrameSampler,
    SampledFrame,
    VideoLimits,
    load_image,
    probe_video,
)
from core.models.clip import ClipEmbedder
from core.types import FailedFile, Vector, Vectors

__all__ = [
    "DEFAULT_TEMPLATES",
    "LABEL_PRESETS",
    "NEUTRAL_LABEL",
    "Classification",
    "EmbeddedImages",
    "Evaluation",
    "FolderClassification",
    "FrameClassification",
    "classify",
    "classify_folder",
    "classify_frames",
    "classify_video",
    "clear_label_cache",
    "embed_images",
    "evaluate",
    "label_embeddings",
    "overlay",
    "parse_labels",
    "parse_templates",
    "to_csv",
    "validate_templates",
    "where_map",
    "where_map_cost",
]

LABEL_PRESETS: dict[str, tuple[str, ...]] = {
    "road scene": (
        "car",
        "truck",
        "bus",
        "van",
        "bicycle",
        "motorcycle",
        "pedestrian",
        "traffic light",
        "stop sign",
        "speed limit sign",
        "traffic cone",
        "crosswalk",
    ),
    "conditions": ("day", "night", "rain", "fog", "snow"),
    "general": (
        "person",
        "dog",
        "cat",
        "bird",
        "fish",
        "car",
        "bicycle",
        "airplane",
        "boat",
        "tree",
        "flower",
        "fruit",
        "food",
        "building",
        "furniture",
        "computer",
        "ball",
        "painting",
    ),
}

# Ten prompts in the style of CLIP's published ImageNet ensemble: they vary image quality, size and
# framing, which is what a label's embedding should be invariant to.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a low resolution photo of a {}.",
    "a good photo of the {}.",
)

# Multi-label scoring without a model bias compares each label with this, put into the same
# templates (so the templates' own pull on the embedding cancels out).
NEUTRAL_LABEL = "thing"
DEFAULT_THRESHOLD = 0.5

_LOAD_MIN_SIDE = max(THUMBNAIL_SIZE, 224)  # as the indexer decodes: same pixels, same vectors
_TEXT_CHUNK = 256  # prompts per text-tower call: bounds memory for long label lists
_CACHE_SIZE = 64  # ensembled label matrices kept (a few KB to a few MB each)


# =============================================================================================
# Labels and templates
# =============================================================================================


def parse_labels(
    text: str,
    embedder: ClipEmbedder | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> tuple[list[str], list[str]]:
    """Labels typed by a user -> (labels, warnings).

    Labels are separated by commas or new lines, stripped, and empty ones dropped. A label that
    repeats an earlier one (ignoring case) is dropped with a warning. With an embedder, a label
    whose longest prompt needs more tokens than the text tower reads gets a warning naming it
    (the tokenizer cuts the end off, so the label's tail is ignored).

    Raises:
        QueryError: no labels at all.
    """
    labels: list[str] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    for raw in text.replace("\r", "\n").replace(",", "\n").split("\n"):
        label = " ".join(raw.split())  # inner runs of spaces would make distinct-looking prompts
        if not label:
            continue
        folded = label.casefold()
        if folded in seen:
            first = seen[folded]
            same = f"'{label}'" if first == label else f"'{label}' (same as '{first}')"
            warnings.append(f"duplicate label {same} ignored")
            continue
        seen[folded] = label
        labels.append(label)
    if not labels:
        raise QueryError("no labels: type at least one label, separated by commas or new lines")
    if embedder is not None:
        checked = validate_templates(templates)
        limit = embedder.context_length
        for label in labels:
            longest = max(checked, key=lambda t: embedder.token_count(t.format(label)))
            need = embedder.token_count(longest.format(label))
            if need > limit:
                warnings.append(
                    f"label '{label}' is too long: in the template '{longest}' it makes a prompt "
                    f"of {need} tokens, but the model reads only {limit}, so the end is cut off; "
                    "shorten the label"
                )
    return labels, warnings


def parse_templates(text: str) -> tuple[str, ...]:
    """Templates typed one per line (they may contain commas) -> validated templates."""
    return validate_templates([line.strip() for line in text.splitlines() if line.strip()])


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Templates as a tuple, duplicates dropped; each must hold exactly one `{}` for the label.

    Raises:
        QueryError: no templates, or one without `{}` (or with other braces `str.format` rejects).
    """
    if isinstance(templates, str):  # a lone string would be read as one template per character
        templates = [templates]
    out = tuple(dict.fromkeys(t.strip() for t in templates if t and t.strip()))
    if not out:
        raise QueryError('no prompt templates: give at least one, such as "a photo of a {}."')
    for template in out:
        if "{}" not in template:
            raise QueryError(
                f"prompt template '{template}' has no {{}} where the label goes; "
                'write it like "a photo of a {}."'
            )
        try:
            template.format("label")
        except (IndexError, KeyError, ValueError):
            raise QueryError(
                f"prompt template '{template}' must contain exactly one {{}} and no other braces"
            ) from None
    return out


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        labels = [labels]
    out = tuple(labels)
    if not out:
        raise QueryError("no labels: give at least one label to classify with")
    seen: set[str] = set()
    for label in out:
        if not isinstance(label, str) or not label.strip():
            raise QueryError("empty label: every label needs some words")
        if label.casefold() in seen:
            raise QueryError(f"label '{label}' is given twice; labels must differ")
        seen.add(label.casefold())
    return out


# =============================================================================================
# Label embeddings (prompt ensembles), cached
# =============================================================================================

_CacheKey = tuple[str, tuple[str, ...], tuple[str, ...]]
_label_cache: OrderedDict[_CacheKey, np.ndarray] = OrderedDict()
_label_lock = threading.Lock()  # guards the two dicts; never held while encoding
# One lock per matrix being computed: concurrent sessions asking for the same labels wait for
# one computation instead of encoding them again, while cache hits for other labels never wait.
_in_flight: dict[_CacheKey, threading.Lock] = {}


def label_embeddings(
    embedder: ClipEmbedder,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> Vectors:
    """Labels -> (n_labels, dim) unit vectors: each the renormalized mean of its prompts' vectors.

    Prompt ensembling: row i = normalize(mean_t unit(embed(template_t.format(label_i)))).
    The matrix is cached per (model key, labels, templates) and returned read-only, so asking
    again (every image batch, every rerun of the app) costs a dictionary lookup. Thread-safe.
    Cost when not cached: n_labels x n_templates prompts through the text tower (prompts the
    embedder's own text cache holds are not encoded again).

    Raises:
        QueryError: no labels, duplicate or empty labels, or invalid templates.
    """
    checked_labels = _check_labels(labels)
    checked_templates = validate_templates(templates)
    key = (embedder.key, checked_labels, checked_templates)
    with _label_lock:
        cached = _cache_get(key)
        if cached is not None:
            return cached
        computing = _in_flight.setdefault(key, threading.Lock())
    with computing:
        with _label_lock:  # another thread may have finished it while this one waited
            cached = _cache_get(key)
        if cached is not None:
            return cached
        try:
            prompts = [t.format(label) for label in checked_labels for t in checked_templates]
            vectors = np.concatenate(
                [
                    embedder.embed_texts(prompts[i : i + _TEXT_CHUNK])
                    for i in range(0, len(prompts), _TEXT_CHUNK)
                ]
            )
            matrix = _ensemble(vectors.reshape(len(checked_labels), len(checked_templates), -1))
            matrix.setflags(write=False)
            with _label_lock:
                _label_cache[key] = matrix
                while len(_label_cache) > _CACHE_SIZE:
                    _label_cache.popitem(last=False)
        finally:
            with _label_lock:
                _in_flight.pop(key, None)
    return matrix


def _cache_get(key: _CacheKey) -> np.ndarray | None:
    """A cached matrix, marked as recently used; call with `_label_lock` held."""
    cached = _label_cache.get(key)
    if cached is not None:
        _label_cache.move_to_end(key)
    return cached


def _ensemble(prompt_vectors: np.ndarray) -> Vectors:
    """(n_labels, n_templates, dim) unit vectors -> (n_labels, dim) renormalized means."""
    mean = prompt_vectors.astype(np.float64).mean(axis=1)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    # Unit vectors that cancel exactly are impossible in practice; guard the division anyway.
    return (mean / np.maximum(norms, 1e-12)).astype(np.float32)


def clear_label_cache() -> None:
    """Forget every cached label matrix (tests; after swapping weights under the same key)."""
    with _label_lock:
        _label_cache.clear()


# =============================================================================================
# Classification
# =============================================================================================


@dataclass(frozen=True, eq=False)
class Classification:
    """Zero-shot results for n images (or frames) over the labels. Arrays are read-only.

    labels:      the labels, in column order.
    cosine:      (n, n_labels) cosine similarity of each image with each label's ensemble vector.
    probs:       (n, n_labels) softmax over labels of logit_scale * cosine; rows sum to 1.
    logit_scale: the model's own temperature, model.logit_scale.exp().
    scores:      multi-label only: (n, n_labels) independent per-label scores in [0, 1]
                 (see `scoring`); None in single-label mode.
    present:     multi-label only: (n, n_labels) bool, scores >= threshold; None otherwise.
    scoring:     "softmax" (single-label), "sigmoid+bias" (the model's own sigmoid, SigLIP), or
                 "vs-neutral" (two-way softmax against the NEUTRAL_LABEL prompts).
    """

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    cosine: np.ndarray
    probs: np.ndarray
    logit_scale: float
    multi_label: bool = False
    scores: np.ndarray | None = None
    present: np.ndarray | None = None
    threshold: float | None = None
    scoring: str = "softmax"

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @property
    def top(self) -> np.ndarray:
        """(n,) index of each image's most probable label."""
        return self.probs.argmax(axis=1)

    @property
    def top_labels(self) -> tuple[str, ...]:
        return tuple(self.labels[i] for i in self.top)

    @property
    def top_probs(self) -> np.ndarray:
        """(n,) probability of each image's top label."""
        return self.probs.max(axis=1) if len(self) else np.empty(0, np.float32)

    def present_labels(self, row: int) -> tuple[str, ...]:
        """Multi-label: the labels found in image `row`, best score first."""
        if self.present is None or self.scores is None:
            raise QueryError("present labels exist in multi-label mode only")
        found = np.flatnonzero(self.present[row])
        return tuple(self.labels[i] for i in found[np.argsort(-self.scores[row, found])])


def _check_mode(labels: tuple[str, ...], multi_label: bool) -> None:
    if len(labels) == 1 and not multi_label:
        raise QueryError(
            f"only one label ('{labels[0]}'): the softmax over a single label is always 1.0, "
            "so it says nothing. Add labels to choose between, or use multi-label mode, which "
            "scores each label on its own"
        )


def _logit_scale(embedder: ClipEmbedder) -> float:
    scale = getattr(embedder.model, "logit_scale", None)
    if scale is None:  # not a CLIP-style model; CLIP's trained value is the sensible stand-in
        return 100.0
    return float(torch.as_tensor(scale).detach().float().exp().reshape(-1)[0])


def _logit_bias(embedder: ClipEmbedder) -> float | None:
    bias = getattr(embedder.model, "logit_bias", None)
    if bias is None:
        return None
    return float(torch.as_tensor(bias).detach().float().reshape(-1)[0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large |x|
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def classify(
    embedder: ClipEmbedder,
    image_vectors: np.ndarray,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    multi_label: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
) -> Classification:
    """Classify (n, dim) unit image vectors (from `embed_images`, or stored in the library).

    Single-label: `probs` = softmax over labels of logit_scale * cosine, one label per image.

    Multi-label: each label is scored on its own, in [0, 1], and `present` = scores >= threshold:
      - models trained with a sigmoid loss carry a `logit_bias` (SigLIP): score =
        sigmoid(logit_scale * cosine + logit_bias), the model's own calibrated probability;
      - softmax-trained CLIP has no bias, and a sigmoid of its raw logits means nothing (cosines
        of unrelated pairs are already ~0.2). Each label is instead a two-way choice against a
        neutral prompt ensemble ("a photo of a thing." ... in the same templates): score =
        softmax([s*cos_label, s*cos_neutral])[0] = sigmoid(s * (cos_label - cos_neutral)), the
        model's own odds that the image is better described by the label than by "a thing". The
        templates' shared pull cancels in the difference, and 0.5 means "no better than
        nothing in particular", so the default threshold needs no tuning per label set.
        (A label that is itself NEUTRAL_LABEL scores exactly 0.5.)
    `probs` (the softmax) is filled in both modes.

    Raises:
        QueryError: no labels, a single label in single-label mode (softmax over one label is
            always 1.0), bad templates, a threshold outside [0, 1], or vectors of the wrong size.
    """
    checked_labels = _check_labels(labels)
    _check_mode(checked_labels, multi_label)
    if not (isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0):
        raise QueryError(f"the threshold must be a number from 0 to 1, not {threshold!r}")
    vectors = np.asarray(image_vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != embedder.dim:
        raise QueryError(
            f"image vectors have shape {vectors.shape}; this model needs (n, {embedder.dim})"
        )
    checked_templates = validate_templates(templates)
    text = label_embeddings(embedder, checked_labels, checked_templates)
    scale = _logit_scale(embedder)

    cosine = vectors @ text.T  # (n, n_labels)
    logits = scale * cosine.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True) if len(logits) else 0.0
    exp = np.exp(logits)
    probs = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    scores = present = None
    scoring = "softmax"
    if multi_label:
        bias = _logit_bias(embedder)
        if bias is not None:
            scoring = "sigmoid+bias"
            scores = _sigmoid(scale * cosine.astype(np.float64) + bias)
        else:
            scoring = "vs-neutral"
            neutral = label_embeddings(embedder, [NEUTRAL_LABEL], checked_templates)[0]
            margin = cosine.astype(np.float64) - (vectors @ neutral)[:, None]
            scores = _sigmoid(scale * margin)
        scores = scores.astype(np.float32)
        present = scores >= threshold
    for array in (cosine, probs, scores, present):
        if array is not None:
            array.setflags(write=False)
    return Classification(
        labels=checked_labels,
        templates=checked_templates,
        cosine=cosine,
        probs=probs,
        logit_scale=scale,
        multi_label=multi_label,
        scores=scores,
        present=present,
        threshold=float(threshold) if multi_label else None,
        scoring=scoring,
    )


# =============================================================================================
# Images in: files, uploads or PIL images
# =============================================================================================


@dataclass(frozen=True, eq=False)
class EmbeddedImages:
    """Images that could be embedded, in input order, and those that could not.

    names:   (n,) how each embedded image was given: its path, or "image <i>" for a PIL image.
    indices: (n,) position of each embedded image in the input sequence.
    vectors: (n, dim) unit vectors.
    failed:  one FailedFile (name, reason) per unusable input.
    """

    names: tuple[str, ...]
    indices: tuple[int, ...]
    vectors: np.ndarray
    failed: tuple[FailedFile, ...] = ()


def _source_name(source: str | Path | Image.Image, index: int) -> str:
    return f"image {index}" if isinstance(source, Image.Image) else str(source)


def _load(source: str | Path | Image.Image) -> Image.Image:
    if isinstance(source, Image.Image):
        return source.convert("RGB") if source.mode != "RGB" else source
    suffix = Path(source).suffix.lower()
    if suffix in UNSUPPORTED_IMAGE_EXTENSIONS:  # as the indexer reports them: by what they are
        raise MediaError(
            source, f"unsupported image format {suffix[1:].upper()}; supported: {SUPPORTED_LIST}"
        )
    return load_image(Path(source), name=str(source), min_side=_LOAD_MIN_SIDE).image


def embed_images(
    embedder: ClipEmbedder,
    sources: Sequence[str | Path | Image.Image],
    *,
    batch_size: int = 16,
) -> EmbeddedImages:
    """Decode and embed images in batches; an unusable file is reported and the rest go on.

    Two loader threads decode and preprocess the next images while the model runs on the
    current batch. JPEGs are decoded as the indexer decodes them, so a file's vector here
    equals its vector in the library.
    """
    if batch_size < 1:
        raise QueryError(f"batch_size must be at least 1, not {batch_size}")
    names: list[str] = []
    indices: list[int] = []
    chunks: list[np.ndarray] = [np.empty((0, embedder.dim), np.float32)]
    failed: list[FailedFile] = []

    def prepare(item: tuple[int, str | Path | Image.Image]):
        index, source = item
        try:
            return index, embedder.preprocess(_load(source)), None
        except MediaError as exc:
            return index, None, exc.reason
        except Exception as exc:  # a PIL image in an odd mode, a transform error: report, go on
            return index, None, f"cannot use the image ({type(exc).__name__}: {exc})"

    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if batch:
            chunks.append(embedder.embed_tensors(torch.stack([t for _, t in batch])))
            for index, _ in batch:
                names.append(_source_name(sources[index], index))
                indices.append(index)
            batch.clear()

    for index, tensor, error in _prefetch(prepare, enumerate(sources), window=2 * batch_size):
        if tensor is None:
            failed.append(FailedFile(path=_source_name(sources[index], index), reason=str(error)))
            continue
        batch.append((index, tensor))
        if len(batch) >= batch_size:
            flush()
    flush()
    vectors = np.concatenate(chunks)
    vectors.setflags(write=False)
    return EmbeddedImages(tuple(names), tuple(indices), vectors, tuple(failed))


def _prefetch(fn, items: Iterable, window: int, workers: int = 2):
    """fn over items in worker threads, results in input order, at most `window` in flight."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zeroshot-load") as pool:
        it = iter(items)
        pending = [pool.submit(fn, x) for x in islice(it, window)]
        while pending:
            result = pending.pop(0).result()
            for x in islice(it, 1):
                pending.append(pool.submit(fn, x))
            yield result


# =============================================================================================
# Folders with ground truth, evaluation, CSV
# =============================================================================================


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Predictions scored against truths.

    accuracy:  share of evaluated images whose prediction is their truth.
    recall:    label -> share of that label's images predicted as it; None when it has none.
    confusion: (n_labels, n_labels) int64 counts; row = true label, column = predicted label.
    evaluated: images with a truth among the labels; skipped: those without (not counted).
    """

    labels: tuple[str, ...]
    accuracy: float
    recall: dict[str, float | None]
    confusion: np.ndarray
    evaluated: int
    skipped: int


def evaluate(
    predictions: Sequence[str],
    truths: Sequence[str | None],
    labels: Sequence[str],
) -> Evaluation:
    """Accuracy, per-label recall and the confusion matrix of predicted vs true labels.

    Truths are matched to labels ignoring case; a truth that is None or matches no label is
    skipped (a folder named otherwise, an image at the top level).

    Raises:
        QueryError: lengths differ, a prediction is not a label, or no image has a usable truth.
    """
    checked = _check_labels(labels)
    if len(predictions) != len(truths):
        raise QueryError(f"{len(predictions)} predictions but {len(truths)} truths")
    index = {label.casefold(): i for i, label in enumerate(checked)}
    confusion = np.zeros((len(checked), len(checked)), dtype=np.int64)
    skipped = 0
    for predicted, truth in zip(predictions, truths, strict=True):
        column = index.get(predicted.casefold())
        if column is None:
            raise QueryError(f"prediction '{predicted}' is not one of the labels")
        row = index.get(truth.casefold()) if truth is not None else None
        if row is None:
            skipped += 1
            continue
        confusion[row, column] += 1
    evaluated = int(confusion.sum())
    if evaluated == 0:
        raise QueryError(
            "nothing to evaluate: no image is in a sub-folder named after one of the labels "
            f"({', '.join(checked)})"
        )
    per_label = confusion.sum(axis=1)
    recall = {
        label: (float(confusion[i, i] / per_label[i]) if per_label[i] else None)
        for i, label in enumerate(checked)
    }
    confusion.setflags(write=False)
    return Evaluation(
        labels=checked,
        accuracy=float(np.trace(confusion) / evaluated),
        recall=recall,
        confusion=confusion,
        evaluated=evaluated,
        skipped=skipped,
    )


@dataclass(frozen=True, eq=False)
class FolderClassification:
    """A classified folder: `paths[i]` is row i of `classification`; `truths[i]` is the label
    named by its nearest enclosing sub-folder (ignoring case), or None."""

    root: str
    paths: tuple[str, ...]
    truths: tuple[str | None, ...]
    classification: Classification
    failed: tuple[FailedFile, ...] = ()

    def evaluate(self) -> Evaluation:
        """Top labels scored against the sub-folder truths (see `evaluate`)."""
        c = self.classification
        return evaluate(c.top_labels, self.truths, c.labels)

    def to_csv(self) -> str:
        return to_csv(self.paths, self.classification)


def _truth(path: Path, root: Path, by_folded: dict[str, str]) -> str | None:
    for part in reversed(path.relative_to(root).parts[:-1]):  # nearest folder first
        if part.casefold() in by_folded:
            return by_folded[part.casefold()]
    return None


def classify_folder(
    embedder: ClipEmbedder,
    folder: str | Path,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    multi_label: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
) -> FolderClassification:
    """Classify every image under a folder (recursively; hidden files skipped).

    Images in sub-folders named after labels (`cars/`, `Trucks/` ...) carry that label as their
    truth, for `FolderClassification.evaluate()`. Unusable image files (and files of image formats
    Framescope cannot read, such as HEIC) are listed in `failed`; other files are ignored.

    Raises:
        MediaError: the folder does not exist.
        QueryError: bad labels or templates, or the folder holds no image files.
    """
    from core.indexing import scan_folder  # the indexer's walk: same files, same order

    checked_labels = _check_labels(labels)
    checked_templates = validate_templates(templates)
    _check_mode(checked_labels, multi_label)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise MediaError(root, "folder not found" if not root.exists() else "not a folder")
    wanted = IMAGE_EXTENSIONS | UNSUPPORTED_IMAGE_EXTENSIONS
    files = [p for p in scan_folder(root) if p.suffix.lower() in wanted]
    if not files:
        raise QueryError(f"no image files in {root}")
    embedded = embed_images(embedder, files, batch_size=batch_size)
    result = classify(
        embedder,
        embedded.vectors,
        checked_labels,
        checked_templates,
        multi_label=multi_label,
        threshold=threshold,
    )
    by_folded = {label.casefold(): label for label in checked_labels}
    return FolderClassification(
        root=str(root),
        paths=embedded.names,
        truths=tuple(_truth(Path(p), root, by_folded) for p in embedded.names),
        classification=result,
        failed=embedded.failed,
    )


def to_csv(paths: Sequence[str], classification: Classification) -> str:
    """CSV text: path, top_label, then p(<label>) for every label (probabilities, 6 decimals).

    Multi-label results add `present` (the labels found, ';'-separated, best first) and
    score(<label>) columns.
    """
    c = classification
    if len(paths) != len(c):
        raise QueryError(f"{len(paths)} paths for {len(c)} classified images")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["path", "top_label", *(f"p({label})" for label in c.labels)]
    if c.multi_label:
        header += ["present", *(f"score({label})" for label in c.labels)]
    writer.writerow(header)
    for row, path in enumerate(paths):
        values = [str(path), c.labels[int(c.top[row])], *(f"{p:.6f}" for p in c.probs[row])]
        if c.multi_label and c.scores is not None:
            values += ["; ".join(c.present_labels(row)), *(f"{s:.6f}" for s in c.scores[row])]
        writer.writerow(values)
    return out.getvalue()


# =============================================================================================
# Video: probabilities over time
# =============================================================================================


@dataclass(frozen=True, eq=False)
class FrameClassification:
    """Sampled frames classified: row i of `classification` is the frame at `timestamps[i]`
    seconds. `classification.probs[:, j]` over `timestamps` is label j's line in a chart."""

    timestamps: np.ndarray  # (n,) float64 seconds
    classification: Classification
    truncated: str | None = None  # classify_video: why decoding stopped early, if it did

    def series(self) -> dict[str, list[float]]:
        """label -> its probability at each timestamp (for a line chart)."""
        c = self.classification
        return {label: c.probs[:, j].tolist() for j, label in enumerate(c.labels)}


def classify_frames(
    embedder: ClipEmbedder,
    frames: Iterable[SampledFrame | tuple[float, Image.Image]],
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    multi_label: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
) -> FrameClassification:
    """Classify video frames (SampledFrame, or (seconds, PIL image) pairs) as they stream in.

    Frames are embedded batch by batch, so memory holds one batch of images, not the video.
    Labels and templates are checked before the first frame is decoded.
    """
    checked_labels = _check_labels(labels)
    checked_templates = validate_templates(templates)
    _check_mode(checked_labels, multi_label)
    label_embeddings(embedder, checked_labels, checked_templates)  # fail (or warm) early
    times: list[float] = []
    chunks: list[np.ndarray] = [np.empty((0, embedder.dim), np.float32)]
    images: list[Image.Image] = []
    for frame in frames:
        if isinstance(frame, SampledFrame):
            seconds, image = frame.timestamp, frame.image
        else:
            seconds, image = frame
        times.append(float(seconds))
        images.append(image.convert("RGB") if image.mode != "RGB" else image)
        if len(images) >= batch_size:
            chunks.append(embedder.embed_images(images, batch_size=batch_size))
            images = []
    if images:
        chunks.append(embedder.embed_images(images, batch_size=batch_size))
    result = classify(
        embedder,
        np.concatenate(chunks),
        checked_labels,
        checked_templates,
        multi_label=multi_label,
        threshold=threshold,
    )
    timestamps = np.asarray(times, dtype=np.float64)
    timestamps.setflags(write=False)
    return FrameClassification(timestamps=timestamps, classification=result)


def classify_video(
    embedder: ClipEmbedder,
    path: str | Path,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    every: float = 1.0,
    max_frames: int | None = 600,
    multi_label: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
    limits: VideoLimits | None = None,
) -> FrameClassification:
    """Probe a video, sample a frame every `every` seconds (at most `max_frames`, spread evenly
    over the whole video when it is longer) and classify the frames.

    Raises:
        MediaError: the file is not a usable video. ConfigError: bad sampling options.
        QueryError: bad labels or templates.
    """
    info = probe_video(Path(path), limits or VideoLimits())
    sampler = FrameSampler(info, every=every, max_frames=max_frames)
    result = classify_frames(
        embedder,
        sampler,
        labels,
        templates,
        multi_label=multi_label,
        threshold=threshold,
        batch_size=batch_size,
    )
    return FrameClassification(result.timestamps, result.classification, sampler.truncated)


# =============================================================================================
# Where in the image: heat maps
# =============================================================================================

WHERE_METHODS = ("patch", "occlusion")


def _square_input(embedder: ClipEmbedder, image: Image.Image) -> torch.Tensor:
    """The whole image as a (1, 3, S, S) model input.

    The classifier's preprocessing center-crops, which would leave the sides of a wide image out
    of the map; here the whole image is resized to the model's square input instead (the aspect
    ratio is not kept; CLIP tolerates that well), so every map cell covers a known part of the
    image and the map stretches back over it exactly.
    """
    height, width = embedder.preprocess(Image.new("RGB", (32, 32))).shape[-2:]
    squashed = image.convert("RGB").resize((int(width), int(height)), Image.Resampling.BICUBIC)
    # Resize and center-crop are no-ops on an image of the input size; only the normalization
    # (and whatever else the model's transform does) applies.
    return embedder.preprocess(squashed).unsqueeze(0)


def where_map(
    embedder: ClipEmbedder,
    image: Image.Image,
    label_vector: Vector,
    method: str = "patch",
    *,
    grid: int = 7,
    batch_size: int = 16,
) -> np.ndarray:
    """Where in the image the label is: an (H', W') float32 map, higher = more of the label.

    The whole image is resized to the model's square input (see `_square_input`), so the map
    covers the whole image; `overlay` stretches it back.

    label_vector: (dim,) the label's unit text vector, e.g. a row of `label_embeddings`.
    method:
      "patch"      cosine similarity of each patch token with the label vector. Patch tokens are
                   projected as the pooled token is (ln_post, then proj), so they live in the
                   joint space. Cost: 1 image forward pass. Map: the ViT's patch grid (7 x 7 for
                   ViT-B-32 at 224 px). Needs a ViT image tower without attentional pooling.
                   CLIP was trained on the pooled token only, so patch similarities are noisy
                   and may favour background; a quick, rough view.
      "occlusion"  drop in the image's similarity to the label when one cell of a `grid` x
                   `grid` partition is covered with the mean colour of CLIP's training images (a
                   neutral gray: zero after normalization). Cost: 1 + grid^2 image forward passes
                   (50 for grid 7), in batches of `batch_size`. Map: (grid, grid). Works with any
                   image tower and measures what the pooled embedding actually uses; may be
                   negative where covering a cell makes the image look more like the label.

    Raises:
        QueryError: unknown method, bad grid, wrong vector size, or "patch" on a model that
            has no patch tokens.
    """
    if method not in WHERE_METHODS:
        raise QueryError(f"unknown method '{method}'; one of {', '.join(WHERE_METHODS)}")
    vector = np.asarray(label_vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != embedder.dim:
        raise QueryError(
            f"label vector has {vector.shape[0]} values; this model needs {embedder.dim}"
        )
    x = _square_input(embedder, image)
    if method == "patch":
        return _patch_map(embedder, x, vector)
    if not (isinstance(grid, int) and 1 <= grid <= 32):
        raise QueryError(f"grid must be a whole number from 1 to 32, not {grid!r}")
    return _occlusion_map(embedder, x, vector, grid, batch_size)


def _patch_map(embedder: ClipEmbedder, x: torch.Tensor, vector: np.ndarray) -> np.ndarray:
    from open_clip.transformer import VisionTransformer

    visual = getattr(embedder.model, "visual", None)
    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
        raise QueryError(
            "patch maps need a ViT image tower with plain patch tokens, which this model does "
            "not have; use the occlusion method"
        )
    grid_h, grid_w = (int(v) for v in visual.grid_size)
    with embedder._lock, torch.inference_mode():
        # open_clip returns (pooled, tokens) when output_tokens is set; it is a constructor flag,
        # so it is switched on for this one call only, under the lock every forward pass takes.
        previous = visual.output_tokens
        visual.output_tokens = True
        try:
            _, tokens = visual(x.to(embedder.device))
        finally:
            visual.output_tokens = previous
        if visual.final_ln_after_pool:  # then ln_post was applied to the pooled token only
            tokens = visual.ln_post(tokens)
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        tokens = torch.nn.functional.normalize(tokens.float(), dim=-1)[0].cpu().numpy()
    if tokens.shape[0] != grid_h * grid_w:
        raise QueryError(
            "patch maps need one token per patch, which this model does not return; use the "
            "occlusion method"
        )
    return (tokens @ vector).reshape(grid_h, grid_w).astype(np.float32)


def _occlusion_map(
    embedder: ClipEmbedder, x: torch.Tensor, vector: np.ndarray, grid: int, batch_size: int
) -> np.ndarray:
    height, width = x.shape[-2:]
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    # The unmasked image rides in the first batch: 1 + grid^2 passes in all.
    inputs: list[torch.Tensor] = [x[0]]
    for r, c in cells:
        masked = x[0].clone()
        masked[:, rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = 0.0
        inputs.append(masked)
    sims = np.concatenate(
        [
            embedder.embed_tensors(torch.stack(inputs[i : i + batch_size])) @ vector
            for i in range(0, len(inputs), max(1, batch_size))
        ]
    )
    return (sims[0] - sims[1:]).reshape(grid, grid).astype(np.float32)


# A perceptually ordered dark-to-bright heat palette (near black, purple, red, orange, pale yellow).
_HEAT_STOPS = np.array(
    [
        [0.0, 0, 0, 4],
        [0.25, 87, 16, 110],
        [0.5, 188, 55, 84],
        [0.75, 249, 142, 9],
        [1.0, 252, 255, 164],
    ],
    dtype=np.float64,
)
_HEAT_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), _HEAT_STOPS[:, 0], _HEAT_STOPS[:, k]) for k in (1, 2, 3)],
    axis=1,
).astype(np.uint8)  # (256, 3)


def overlay(image: Image.Image, heat: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """The image with a heat map over it: an RGB image of the image's size.

    The map is scaled to [0, 1] (its minimum to its maximum: the colours show where, not how
    much; a flat map is all dark), stretched to the image with bilinear interpolation, coloured
    with a dark-to-bright palette, and blended: 0 = the image only, 1 = the heat map only.
    """
    if not (isinstance(opacity, int | float) and 0.0 <= opacity <= 1.0):
        raise QueryError(f"opacity must be a number from 0 to 1, not {opacity!r}")
    values = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim != 2 or values.size == 0:
        raise QueryError(f"a heat map must be a 2-D array, not shape {values.shape}")
    low, high = values.min(), values.max()
    unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
    base = image.convert("RGB")
    stretched = Image.fromarray(unit.astype(np.float32)).resize(
        base.size, Image.Resampling.BILINEAR
    )
    index = np.clip(np.asarray(stretched) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colored = Image.fromarray(_HEAT_LUT[index])
    return Image.blend(base, colored, float(opacity))


def where_map_cost(method: str, grid: int = 7) -> int:
    """Image forward passes `where_map(method=..., grid=...)` makes: 1, or 1 + grid^2."""
    if method not in WHERE_METHODS:
        raise QueryError(f"unknown method '{method}'; one of {', '.join(WHERE_METHODS)}")
    return 1 if method == "patch" else 1 + grid * grid
