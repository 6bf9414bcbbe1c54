"""Labels and prompt templates: parsing, validation, presets and the cached label embeddings."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from core.errors import QueryError
from core.models.clip import ClipEmbedder
from core.types import Vectors

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
