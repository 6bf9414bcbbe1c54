"""Search: what a query finds in the library, and how the user's marks re-rank it.

Modules:
    query     text and image queries with +term/-term algebra, the relevance cutoff, `search`
              (copies of one file collapsed into one hit), what a search looked for
    frames    frame search over chosen videos: rank every frame, collapse shots, refine by marks
    text      text ranking: content words, BM25, reciprocal-rank fusion (captions fused with CLIP)
    feedback  relevance feedback: kNN graphs, label propagation, Rocchio, rank changes, 2-D maps
"""

from __future__ import annotations

from core.search.frames import FrameRanking, HitGroup, collapse_hits, rank_frames, refine_frames
from core.search.query import (
    CUTOFF_FRACTION,
    CUTOFF_MAX_DROP,
    CUTOFF_MIN_SCOPE,
    SCOPE_SAMPLE,
    ParsedQuery,
    build_query,
    collapse_copies,
    describe_search,
    example_names,
    parse_query,
    query_label,
    query_vector,
    relevance_cutoff,
    search,
)
from core.search.text import (
    bm25_scores,
    content_words,
    fuse_caption_scores,
    reciprocal_rank_fusion,
)

__all__ = [
    "CUTOFF_FRACTION",
    "CUTOFF_MAX_DROP",
    "CUTOFF_MIN_SCOPE",
    "SCOPE_SAMPLE",
    "FrameRanking",
    "HitGroup",
    "ParsedQuery",
    "bm25_scores",
    "build_query",
    "collapse_copies",
    "collapse_hits",
    "content_words",
    "describe_search",
    "example_names",
    "fuse_caption_scores",
    "parse_query",
    "query_label",
    "query_vector",
    "rank_frames",
    "reciprocal_rank_fusion",
    "refine_frames",
    "relevance_cutoff",
    "search",
]
