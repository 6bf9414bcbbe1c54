"""Frame search: every frame of chosen videos ranked against a query, shots collapsed, refined."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.errors import QueryError
from core.library import Library
from core.models.clip import ClipEmbedder
from core.search.query import _check_library, build_query
from core.types import Hit, Vector


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
    image_names: Sequence[str] = (),
) -> FrameRanking:
    """Score every frame (and image) of the given videos (and images) against a query, exactly.
    `image_names` name the example images in the ranking's label (`query`)."""
    _check_library(library, embedder)
    if not media_ids:
        raise QueryError("no video selected: pick at least one")
    q, label = build_query(library, embedder, text, images, like, image_weight, image_names)
    ids, media, times, vectors = library.vectors.scope_frames(
        embedder.key, media_ids=list(media_ids)
    )
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
    from core.search import feedback

    media_ids = sorted(set(ranking.media_ids.tolist()))
    ids, _, _, vectors = library.vectors.scope_frames(model_key, media_ids=media_ids)
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
