"""Exports: hits, relevance labels and classification probabilities as CSV and JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from core.errors import QueryError
from core.library import Library
from core.types import Hit, SearchResult
from core.zeroshot import Classification


def label_rows(library: Library, marks: dict[int, int]) -> list[dict]:
    """Marked frames as rows (video, path, timestamp, frame id, label), to build a training set."""
    rows = []
    for hit in library.vectors.hits([(eid, 0.0) for eid in marks]):
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
    "id",
)


def hit_record(hit: Hit) -> dict:
    """A hit as plain data, the same in the CLI's JSON and in every export: `id` is its embedding
    id (what "more like this" takes)."""
    return {
        "path": hit.path,
        "name": hit.name,
        "score": hit.score,
        "collection": hit.collection,
        "kind": hit.kind,
        "timestamp": hit.timestamp,
        "size_bytes": hit.size_bytes,
        "width": hit.width,
        "height": hit.height,
        "id": hit.embedding_id,
    }


def hits_to_rows(hits: Sequence[Hit]) -> list[dict]:
    return [{"rank": rank, **hit_record(h)} for rank, h in enumerate(hits, 1)]


def hits_to_csv(hits: Sequence[Hit]) -> str:
    """Hits as CSV, one ranked row per hit."""
    return rows_to_csv(hits_to_rows(hits), EXPORT_FIELDS)


def hits_to_json(result: SearchResult, *, include_hidden: bool = True) -> str:
    import json

    hits = result.hits if include_hidden else result.shown
    return json.dumps(
        {"query": result.query, "cutoff": result.cutoff, "hits": hits_to_rows(hits)}, indent=2
    )


def classification_to_csv(paths: Sequence[str], classification: Classification) -> str:
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
