"""Classifying image vectors: `Classification` and `classify` (single-label or multi-label)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import QueryError
from core.models.clip import ClipEmbedder
from core.zeroshot.labels import (
    DEFAULT_TEMPLATES,
    _check_labels,
    label_embeddings,
    validate_templates,
)

# Multi-label scoring without a model bias compares each label with this, put into the same
# templates (so the templates' own pull on the embedding cancels out).
NEUTRAL_LABEL = "thing"
DEFAULT_THRESHOLD = 0.5


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
