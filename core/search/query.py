"""Searching the library by text, by example images, or both, with +term/-term query algebra."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.errors import QueryError
from core.models.clip import ClipEmbedder
from core.store import Library
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
    counts = library.counts(embedder.key)
    if counts["embeddings"] == 0:
        if counts["images"] + counts["videos"]:
            raise QueryError(
                f"nothing in the library is indexed with the current model ({embedder.key}): index your folders again"
            )
        raise QueryError("the library is empty: add images or videos first")


def build_query(
    library: Library,
    embedder: ClipEmbedder,
    text: str = "",
    images: Sequence[Image.Image] = (),
    like: Sequence[int] = (),
    image_weight: float = 0.5,
) -> tuple[Vector, str]:
    """The unit query vector for text, example images and library items, and a label for it."""
    examples = [embedder.embed_images(list(images))] if images else []
    for eid in like:
        model_key, vector = library.embedding_of(eid)
        if model_key != embedder.key:
            raise QueryError(f"item {eid} was embedded by another model ({model_key})")
        examples.append(vector[None, :])
    image_vectors = (
        np.concatenate(examples) if examples else np.empty((0, embedder.dim), np.float32)
    )
    q = query_vector(embedder, text, image_vectors, image_weight)
    return q, text.strip() or ("example image" if len(image_vectors) else "")


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
) -> SearchResult:
    """Rank library items (images and video frames) against text and/or example images.

    Args:
        text: words to search for, with optional +term / -term parts.
        images: example images (e.g. uploads), embedded on the fly.
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
    q, label = build_query(library, embedder, text, images, like, image_weight)
    scope = {"kinds": kinds, "media_ids": media_ids}
    scored = library.search_vectors(embedder.key, q, k, collections, **scope)
    if not scored:
        what = "videos" if kinds == ("video",) else "collections"
        raise QueryError(f"nothing indexed in the selected {what}")
    hits = library.hits(scored)
    scope_scores = library.sample_vectors(embedder.key, SCOPE_SAMPLE, collections, **scope) @ q
    cutoff = relevance_cutoff(hits[0].score, scope_scores) if hits else None
    return SearchResult(hits=tuple(hits), cutoff=cutoff, query=label)


@dataclass(frozen=True)
class HitGroup:
    """Hits from one shot of a video collapsed into the best of them."""

    best: Hit
    members: tuple[Hit, ...]  # every hit of the group, best included, in time order

    @property
    def more(self) -> int:
        return len(self.members) - 1


def collapse_hits(
    hits: Sequence[Hit],
    window: float,
    vectors: dict[int, np.ndarray] | None = None,
    same_shot: float = 0.9,
    max_span: float | None = None,
) -> list[HitGroup]:
    """Collapse hits of one shot into the best of them; groups keep the order of `hits` (ranked).

    Hits of a video chain into one group while each follows the previous within `window` seconds,
    the group spans at most `max_span` seconds (default 4 windows: a long take still shows
    several moments) and, when `vectors` are given, consecutive hits look alike (cosine >=
    same_shot: a cut starts a new group). Images and lone frames are groups of one.
    """
    max_span = 4 * window if max_span is None else max_span
    groups: list[list[Hit]] = []
    by_media: dict[int, list[Hit]] = {}
    for hit in hits:
        if hit.timestamp is None:
            groups.append([hit])
        else:
            by_media.setdefault(hit.media_id, []).append(hit)
    for media_hits in by_media.values():
        media_hits.sort(key=lambda h: h.timestamp)
        current = [media_hits[0]]
        for prev, hit in itertools.pairwise(media_hits):
            close = (
                hit.timestamp - prev.timestamp <= window
                and hit.timestamp - current[0].timestamp <= max_span
            )
            alike = (
                vectors is None
                or float(vectors[prev.embedding_id] @ vectors[hit.embedding_id]) >= same_shot
            )
            if close and alike:
                current.append(hit)
            else:
                groups.append(current)
                current = [hit]
        groups.append(current)
    rank = {h.embedding_id: i for i, h in enumerate(hits)}
    out = [
        HitGroup(best=min(g, key=lambda h: rank[h.embedding_id]), members=tuple(g)) for g in groups
    ]
    return sorted(out, key=lambda g: rank[g.best.embedding_id])


@dataclass(frozen=True)
class FrameRanking:
    """Every item of a frame-search scope with its score, for the hit list, timeline and feedback.

    Arrays are aligned, in scope order (by video, then time): ids, media_ids, timestamps (NaN for
    images) and scores (cosine to the query, or the scores of a feedback round).
    """

    query: str
    query_vector: Vector
    ids: np.ndarray
    media_ids: np.ndarray
    timestamps: np.ndarray
    scores: np.ndarray
    order: np.ndarray | None = None  # positions best first, when not simply by score (pinned marks)

    def _order(self) -> np.ndarray:
        if self.order is not None:
            return self.order
        return np.lexsort((np.arange(len(self.scores)), -self.scores))

    def top(self, k: int) -> list[tuple[int, float]]:
        """The k best (embedding id, score), best first; ties broken by scope order."""
        return [(int(self.ids[i]), float(self.scores[i])) for i in self._order()[:k]]

    def ranks(self) -> dict[int, int]:
        """Rank (1 = best) of every item by embedding id."""
        return {int(self.ids[i]): rank for rank, i in enumerate(self._order(), 1)}

    def with_scores(self, scores: np.ndarray, order: np.ndarray | None = None) -> FrameRanking:
        scores = np.asarray(scores, np.float32)
        return FrameRanking(
            self.query, self.query_vector, self.ids, self.media_ids, self.timestamps, scores, order
        )


def rank_frames(
    library: Library,
    embedder: ClipEmbedder,
    text: str = "",
    *,
    media_ids: Sequence[int],
    images: Sequence[Image.Image] = (),
    like: Sequence[int] = (),
    image_weight: float = 0.5,
) -> FrameRanking:
    """Score every frame (and image) of the given videos (and images) against a query, exactly."""
    _check_library(library, embedder)
    if not media_ids:
        raise QueryError("no video selected: pick at least one")
    q, label = build_query(library, embedder, text, images, like, image_weight)
    ids, media, times, vectors = library.scope_frames(embedder.key, media_ids=list(media_ids))
    if len(ids) == 0:
        raise QueryError("the selected videos have no indexed frames yet")
    return FrameRanking(label, q, ids, media, times, (vectors @ q).astype(np.float32))


def refine_frames(
    library: Library,
    model_key: str,
    ranking: FrameRanking,
    query_scores: np.ndarray,
    marks: dict[int, int],
    *,
    method: str = "propagation",
    prior_weight: float | None = None,
) -> FrameRanking:
    """Re-rank every item of a frame-search scope from marks ({embedding id: +1 or -1}).

    `query_scores` are the scores of the original query (kept as a prior by label propagation);
    the kNN graph of the scope is built once and cached (core.feedback.GRAPHS).
    """
    from core import feedback

    media_ids = sorted(set(ranking.media_ids.tolist()))
    ids, _, _, vectors = library.scope_frames(model_key, media_ids=media_ids)
    if not np.array_equal(ids, ranking.ids):
        raise QueryError("the videos changed since this search: search again, then mark frames")
    position = {int(e): i for i, e in enumerate(ids)}
    by_position = {position[e]: v for e, v in marks.items() if e in position}
    if not by_position:
        raise QueryError("mark at least one frame as relevant or irrelevant, then refine")
    options = {} if prior_weight is None else {"prior_weight": prior_weight}
    graph = feedback.GRAPHS.get(model_key, ids, vectors) if method == feedback.PROPAGATION else None
    result = feedback.refine(
        method,
        by_position,
        query_scores,
        graph=graph,
        vectors=vectors,
        query_vector=ranking.query_vector,
        **options,
    )
    return ranking.with_scores(result.scores, result.order)


def label_rows(library: Library, marks: dict[int, int]) -> list[dict]:
    """Marked frames as rows (video, path, timestamp, frame id, label), to build a training set."""
    rows = []
    for hit in library.hits([(eid, 0.0) for eid in marks]):
        rows.append(
            {
                "video": hit.name,
                "path": hit.path,
                "timestamp": hit.timestamp,
                "frame_id": hit.frame_id,
                "embedding_id": hit.embedding_id,
                "label": "relevant" if marks[hit.embedding_id] > 0 else "irrelevant",
            }
        )
    return sorted(
        rows, key=lambda r: (r["video"], r["timestamp"] if r["timestamp"] is not None else -1.0)
    )


def rows_to_csv(rows: Sequence[dict], fields: Sequence[str] | None = None) -> str:
    """Rows as CSV; cells a spreadsheet would run as formulas are quoted."""
    import csv
    import io

    out = io.StringIO()
    fields = list(fields or (rows[0] if rows else []))
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@\t\r" else v)
                for k, v in row.items()
            }
        )
    return out.getvalue()


EXPORT_FIELDS = (
    "rank",
    "score",
    "name",
    "path",
    "collection",
    "kind",
    "timestamp",
    "size_bytes",
    "width",
    "height",
)


def hits_to_rows(hits: Sequence[Hit]) -> list[dict]:
    return [
        {"rank": rank, **{f: getattr(h, f) for f in EXPORT_FIELDS if f != "rank"}}
        for rank, h in enumerate(hits, 1)
    ]


def hits_to_csv(hits: Sequence[Hit]) -> str:
    """Hits as CSV, one ranked row per hit."""
    return rows_to_csv(hits_to_rows(hits), EXPORT_FIELDS)


def hits_to_json(result: SearchResult, *, include_hidden: bool = True) -> str:
    import json

    hits = result.hits if include_hidden else result.shown
    return json.dumps(
        {"query": result.query, "cutoff": result.cutoff, "hits": hits_to_rows(hits)}, indent=2
    )
