"""Exports: hits, relevance labels and classification probabilities as CSV and JSON, and the
helpers every export uses on text it did not write itself (model output, titles, file names):
`inert_text` / `inert_data` (no control characters or bidi overrides) and `csv_cell` (no formulas).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.errors import QueryError

if TYPE_CHECKING:
    from core.library import Library
    from core.types import Hit, SearchResult
    from core.zeroshot import Classification

# C0 controls, DEL and C1 controls, and the Unicode bidi embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069), which can make a file show text in another order than it has.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def inert_text(text: Any, *, keep: str = "\n\t") -> str:
    """Text safe to write into an exported file or print to a terminal: control characters (other
    than those in `keep`, newline and tab by default) and bidi overrides are removed; a carriage
    return becomes a newline when newlines are kept, else a space, as do newlines themselves.
    """
    text = "" if text is None else str(text)
    line_break = "\n" if "\n" in keep else " "
    text = text.replace("\r\n", line_break).replace("\r", line_break)
    if "\n" not in keep:
        text = text.replace("\n", " ")
    if "\t" not in keep:
        text = text.replace("\t", " ")
    return _CONTROLS.sub(lambda m: m.group() if m.group() in keep else "", text)


def inert_data(value: Any) -> Any:
    """JSON-like data (dicts, lists, tuples, strings, numbers) with every string made inert_text."""
    if isinstance(value, str):
        return inert_text(value)
    if isinstance(value, dict):
        return {inert_data(k): inert_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [inert_data(v) for v in value]
    return value


def csv_cell(value: Any) -> Any:
    """A CSV cell: text made inert (inert_text), then quoted with ' when a spreadsheet would run it
    as a formula (it starts with = + - @ or a tab or line break); numbers and None are kept."""
    if not isinstance(value, str):
        return value
    value = inert_text(value)
    return "'" + value if value[:1] in _FORMULA_START else value


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
    """Rows as CSV; cells a spreadsheet would run as formulas are quoted (see csv_cell)."""
    out = io.StringIO()
    fields = list(fields or (rows[0] if rows else []))
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
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
    "paths",
)


def hit_record(hit: Hit) -> dict:
    """A hit as plain data, the same in the CLI's JSON and in every export: `id` is its embedding
    id (what "more like this" takes); `paths` lists every copy of the file the hit stands for
    (its own path first)."""
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
        "paths": list(hit.paths),
    }


def hits_to_rows(hits: Sequence[Hit]) -> list[dict]:
    return [{"rank": rank, **hit_record(h)} for rank, h in enumerate(hits, 1)]


PATHS_SEPARATOR = " | "  # between the paths of one hit's copies, in a CSV cell


def hits_to_csv(hits: Sequence[Hit]) -> str:
    """Hits as CSV, one ranked row per hit; `paths` holds every copy's path, " | " between them."""
    rows = [{**row, "paths": PATHS_SEPARATOR.join(row["paths"])} for row in hits_to_rows(hits)]
    return rows_to_csv(rows, EXPORT_FIELDS)


def hits_to_json(result: SearchResult, *, include_hidden: bool = True) -> str:
    """The query (its text and example images), the cutoff and the ranked hits, as JSON."""
    import json

    hits = result.hits if include_hidden else result.shown
    data = {
        "query": result.query,
        "text": result.text,
        "examples": list(result.examples),
        "cutoff": result.cutoff,
        "hits": hits_to_rows(hits),
    }
    return json.dumps(inert_data(data), indent=2)


def classification_to_csv(paths: Sequence[str], classification: Classification) -> str:
    """CSV text: path, top_label, then p(<label>) for every label (probabilities, 6 decimals).

    Multi-label results add `present` (the labels found, ';'-separated, best first) and
    score(<label>) columns. Cells are protected like every CSV here (see csv_cell).
    """
    c = classification
    if len(paths) != len(c):
        raise QueryError(f"{len(paths)} paths for {len(c)} classified images")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["path", "top_label", *(f"p({label})" for label in c.labels)]
    if c.multi_label:
        header += ["present", *(f"score({label})" for label in c.labels)]
    writer.writerow([csv_cell(cell) for cell in header])
    for row, path in enumerate(paths):
        values = [str(path), c.labels[int(c.top[row])], *(f"{p:.6f}" for p in c.probs[row])]
        if c.multi_label and c.scores is not None:
            values += ["; ".join(c.present_labels(row)), *(f"{s:.6f}" for s in c.scores[row])]
        writer.writerow([csv_cell(cell) for cell in values])
    return out.getvalue()
