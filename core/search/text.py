"""Text ranking: content words, BM25 over short documents, and reciprocal-rank fusion."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from core.library import Library

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "in",
        "at",
        "with",
        "and",
        "is",
        "are",
        "to",
        "there",
        "this",
        "that",
        "it",
        "its",
    ]
)


def content_words(text: str) -> set[str]:
    """The lower-case words of a text, without the commonest function words."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def bm25_scores(
    query: str, documents: Sequence[str], k1: float = 1.2, b: float = 0.75
) -> np.ndarray:
    """BM25 relevance of each document to the query's words (0 where none match)."""
    terms = content_words(query)
    docs = [_WORD.findall(d.lower()) for d in documents]
    if not terms or not docs:
        return np.zeros(len(docs))
    avg = sum(len(d) for d in docs) / len(docs) or 1.0
    scores = np.zeros(len(docs))
    for term in terms:
        df = sum(1 for d in docs if term in d)
        if not df:
            continue
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(term)
            if tf:
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avg))
    return scores


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = 60) -> dict[int, float]:
    """RRF: each item scores sum(1 / (k + rank)) over the rankings it appears in (rank from 1)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


def fuse_caption_scores(library: Library, ranking, query: str):
    """A frame ranking re-scored by reciprocal-rank fusion of caption text match (BM25) and CLIP."""
    captions = library.annotations.captions_in_scope(sorted(set(ranking.media_ids.tolist())))
    if not captions:
        return ranking
    by_frame: dict[int, list[str]] = {}
    for frame_id, _, text in captions:
        by_frame.setdefault(frame_id, []).append(text)
    frame_of = library.vectors.frame_ids(ranking.ids.tolist())
    ids = [int(i) for i in ranking.ids]
    docs = [" ".join(by_frame.get(frame_of.get(i), [])) for i in ids]
    text_scores = bm25_scores(query, docs)
    text_rank = [ids[i] for i in np.argsort(-text_scores, kind="stable") if text_scores[i] > 0]
    clip_rank = [ids[i] for i in np.argsort(-ranking.scores, kind="stable")]
    fused = reciprocal_rank_fusion([text_rank, clip_rank])
    return ranking.with_scores(np.array([fused[i] for i in ids], np.float32))
