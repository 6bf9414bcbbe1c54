"""Searching the library by text, by example images, or both, with +term/-term query algebra."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from core.errors import QueryError
from core.format import format_timestamp
from core.library import Library
from core.models.clip import ClipEmbedder
from core.types import Hit, SearchResult, Vector

CUTOFF_FRACTION = 0.5  # hits closer to the scope's median score than to the best hit are hidden...
CUTOFF_MAX_DROP = 0.05  # ...but only when they are also this far (cosine) below the best hit
CUTOFF_MIN_SCOPE = 10  # with fewer items in scope every hit is shown
SCOPE_SAMPLE = 2000  # items drawn to estimate the scope's median score

_TOKEN = re.compile(r'([+-]?)(?:"([^"]*)"|(\S+))')


@dataclass(frozen=True)
class ParsedQuery:
    """`red car +rain -night`: text "red car", plus ("rain",), minus ("night",)."""

    text: str
    plus: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.text or self.plus or self.minus)


def parse_query(query: str) -> ParsedQuery:
    """Split a query into its main text and +term/-term parts; quotes group words ("+traffic light")."""
    text, plus, minus = [], [], []
    for sign, quoted, word in _TOKEN.findall(query or ""):
        term = (quoted if quoted else word).strip()
        if not term or term in "+-":
            continue
        if sign == "+":
            plus.append(term)
        elif sign == "-":
            minus.append(term)
        else:
            text.append(term)
    return ParsedQuery(" ".join(text), tuple(plus), tuple(minus))


def _unit(v: np.ndarray) -> Vector:
    norm = float(np.linalg.norm(v))
    if norm < 1e-8:
        raise QueryError(
            "the query cancels itself out (the -terms remove everything): change the terms"
        )
    return (v / norm).astype(np.float32)


def query_vector(
    embedder: ClipEmbedder,
    text: str = "",
    image_vectors: Sequence[np.ndarray] = (),
    image_weight: float = 0.5,
) -> Vector:
    """One unit query vector from text (with +/- terms) and example image embeddings.

    Text part: embed(text) + sum(embed(+terms)) - sum(embed(-terms)). Image part: the mean of the
    example embeddings. Both given: (1 - image_weight) * text + image_weight * image. Each part is
    normalized before mixing, so the weight means what it says.
    """
    if not 0.0 <= image_weight <= 1.0:
        raise QueryError(f"image weight must be between 0 and 1, not {image_weight}")
    parsed = parse_query(text)
    has_text = bool(parsed.text or parsed.plus)
    if not has_text and not len(image_vectors):
        if parsed.minus:
            raise QueryError(
                "-terms only narrow a search: add words or an example image to search for"
            )
        raise QueryError("empty query: type what to look for, or give an example image")
    parts = []
    positive = [t for t in (parsed.text, *parsed.plus) if t]
    minus = embedder.embed_texts(list(parsed.minus)).sum(axis=0) if parsed.minus else 0.0
    if has_text:
        parts.append(
            (
                1.0 - image_weight if len(image_vectors) else 1.0,
                _unit(embedder.embed_texts(positive).sum(axis=0)),
            )
        )
    if len(image_vectors):
        parts.append(
            (
                image_weight if has_text else 1.0,
                _unit(np.mean(np.asarray(image_vectors, np.float32), axis=0)),
            )
        )
    combined = sum(w * v for w, v in parts)
    return _unit(combined - minus)


def relevance_cutoff(best: float, scope_scores: np.ndarray) -> float | None:
    """Score below which hits are clearly unrelated, or None when too few items to judge.

    A hit is hidden when its score is closer to the median score of the whole scope (what an
    unrelated item typically scores) than to the best hit, and at least CUTOFF_MAX_DROP below the
    best hit (so a scope full of good matches keeps them).
    """
    if len(scope_scores) < CUTOFF_MIN_SCOPE:
        return None
    median = float(np.median(scope_scores))
    if best <= median:
        return None
    return min(median + CUTOFF_FRACTION * (best - median), best - CUTOFF_MAX_DROP)


def _check_library(library: Library, embedder: ClipEmbedder) -> None:
    counts = library.catalog.counts(embedder.key)
    if counts["embeddings"] == 0:
        if counts["images"] + counts["videos"]:
            raise QueryError(
                f"nothing in the library is indexed with the current model ({embedder.key}): index your folders again"
            )
        raise QueryError("the library is empty: add images or videos first")


def example_names(
    library: Library,
    image_count: int,
    like: Sequence[int] = (),
    image_names: Sequence[str] = (),
) -> tuple[str, ...]:
    """What the example images of a query are called: the names given for the images (an
    upload's file name; "example image" when none is given), then the library items of "more
    like this" (a video frame with its moment: "box.mp4 at 0:03.0")."""
    names = [str(n) for n in list(image_names)[:image_count]]
    names += ["example image"] * (image_count - len(names))
    for hit in library.vectors.hits([(int(eid), 0.0) for eid in like]):
        at = f" at {format_timestamp(hit.timestamp)}" if hit.timestamp is not None else ""
        names.append(f"{hit.name}{at}")
    return tuple(names)


def query_label(text: str, examples: Sequence[str] = ()) -> str:
    """A query as one line of text (exports, the CLI): "red car", "cat.jpg", "red car + cat.jpg"."""
    text, shown = text.strip(), ", ".join(examples)
    return f"{text} + {shown}" if text and shown else text or shown


def describe_search(text: str, examples: Sequence[str] = ()) -> str:
    """What a search looked for, as a caption says it: “red car”, the image cat.jpg, or
    “red car” and the image cat.jpg."""
    parts = [f"“{text.strip()}”"] if text.strip() else []
    if examples:
        parts.append(f"the image{'s' if len(examples) > 1 else ''} {', '.join(examples)}")
    return " and ".join(parts)


def build_query(
    library: Library,
    embedder: ClipEmbedder,
    text: str = "",
    images: Sequence[Image.Image] = (),
    like: Sequence[int] = (),
    image_weight: float = 0.5,
    image_names: Sequence[str] = (),
) -> tuple[Vector, str]:
    """The unit query vector for text, example images and library items, and a label for it
    (see `query_label`: the text and the examples' names)."""
    examples = [embedder.embed_images(list(images))] if images else []
    for eid in like:
        model_key, vector = library.vectors.embedding_of(eid)
        if model_key != embedder.key:
            raise QueryError(f"item {eid} was embedded by another model ({model_key})")
        examples.append(vector[None, :])
    image_vectors = (
        np.concatenate(examples) if examples else np.empty((0, embedder.dim), np.float32)
    )
    q = query_vector(embedder, text, image_vectors, image_weight)
    names = example_names(library, len(images), like, image_names) if len(image_vectors) else ()
    return q, query_label(text, names)


def collapse_copies(hits: Sequence[Hit]) -> list[Hit]:
    """Copies of one file (the same sha256: an upload of a photo also indexed from a folder, one
    file in two collections) as one hit: the best ranked, listing the other paths in `copies`.
    For video frames the copies are the frames of the same moment. The order is kept."""
    out: list[Hit] = []
    first: dict[tuple[str, float | None], int] = {}
    for hit in hits:
        if not hit.sha256:
            out.append(hit)
            continue
        key = (hit.sha256, None if hit.timestamp is None else round(hit.timestamp, 3))
        at = first.get(key)
        if at is None:
            first[key] = len(out)
            out.append(hit)
        elif hit.path not in out[at].paths:
            out[at] = replace(out[at], copies=(*out[at].copies, hit.path))
    return out


def search(
    library: Library,
    embedder: ClipEmbedder,
    text: str = "",
    *,
    images: Sequence[Image.Image] = (),
    like: Sequence[int] = (),
    image_weight: float = 0.5,
    k: int = 24,
    collections: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    media_ids: Sequence[int] | None = None,
    image_names: Sequence[str] = (),
) -> SearchResult:
    """Rank library items (images and video frames) against text and/or example images.

    Copies of one file (same content) come back as one hit that lists their paths (`copies`).

    Args:
        text: words to search for, with optional +term / -term parts.
        images: example images (e.g. uploads), embedded on the fly.
        image_names: what the example images are called (their file names), for the label.
        like: embedding ids of library items to use as examples ("more like this").
        image_weight: share of the image part when text and images are both given (0..1).
        k: number of hits.
        collections: restrict to these collections (None: all).
        kinds: restrict to "image" and/or "video" items (None: both).
        media_ids: restrict to these images or videos (None: all).
    """
    if k < 1:
        raise QueryError("k must be at least 1")
    _check_library(library, embedder)
    if collections is not None and not collections:
        raise QueryError("no collection selected: pick at least one")
    if media_ids is not None and not media_ids:
        raise QueryError("no video selected: pick at least one")
    q, label = build_query(library, embedder, text, images, like, image_weight, image_names)
    scope = {"kinds": kinds, "media_ids": media_ids}
    # Copies share their vector, so they rank together: fetch more than k, collapse, keep k.
    fetch = 2 * k + 8
    while True:
        scored = library.vectors.search(embedder.key, q, fetch, collections, **scope)
        hits = collapse_copies(library.vectors.hits(scored))
        if len(hits) > k or len(scored) < fetch:
            break
        fetch *= 4
    if not scored:
        what = "videos" if kinds == ("video",) else "collections"
        raise QueryError(f"nothing indexed in the selected {what}")
    hits = hits[:k]
    scope_scores = library.vectors.sample(embedder.key, SCOPE_SAMPLE, collections, **scope) @ q
    cutoff = relevance_cutoff(hits[0].score, scope_scores) if hits else None
    examples = example_names(library, len(images), like, image_names)
    return SearchResult(
        hits=tuple(hits), cutoff=cutoff, query=label, text=text.strip(), examples=examples
    )
