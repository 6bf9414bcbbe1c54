"""Images in (files, uploads, PIL images) and folders with ground truth: evaluation and CSV."""

from __future__ import annotations

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
    load_image,
)
from core.models.clip import ClipEmbedder
from core.types import FailedFile
from core.zeroshot.classification import DEFAULT_THRESHOLD, Classification, _check_mode, classify
from core.zeroshot.labels import DEFAULT_TEMPLATES, _check_labels, validate_templates

_LOAD_MIN_SIDE = max(THUMBNAIL_SIZE, 224)  # as the indexer decodes: same pixels, same vectors


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
        from core.export import classification_to_csv

        return classification_to_csv(self.paths, self.classification)


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
