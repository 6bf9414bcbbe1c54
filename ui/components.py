"""Render helpers: banners, errors, progress, the hit grid. Untrusted text is always shown inert."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from core.config import Settings
from core.errors import FramescopeError
from core.types import Hit, IndexReport

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def plain(text: str | None) -> str:
    """Escape text (file names, model output, metadata) for Markdown: no links, images, HTML, emoji."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text or "").replace("\n", " ")


def format_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def page_header(title: str, settings: Settings) -> None:
    st.title(title)
    if settings.profile == "tiny":
        st.warning(
            "Tiny profile: the models have **random weights**, so rankings and labels are meaningless. "
            "It exists for trying the app offline and for tests. Set `FRAMESCOPE_PROFILE=default` for real models.",
            icon=":material/science:",
        )


def show_error(exc: FramescopeError) -> None:
    """A FramescopeError as a message (never a traceback); its text is shown literally."""
    st.error(plain(str(exc)), icon=":material/error:")


class ProgressBar:
    """A progress callback (done, total, message) drawing a Streamlit progress bar."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = st.progress(0.0, text=label)
        self.last = 0.0

    def __call__(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if message != "done" and now - self.last < 0.25:
            return
        self.last = now
        fraction = done / total if total else 1.0
        self.bar.progress(min(1.0, fraction), text=f"{self.label}: {done}/{total} · {message}")


def index_report(report: IndexReport) -> None:
    """The outcome of an indexing run, failures listed with their reasons."""
    from core.indexing import index_report_lines

    summary = index_report_lines(report)[0]
    if report.interrupted:
        st.warning(plain(summary) + " · stopped before the end; run it again to resume.")
    elif report.failed:
        st.warning(plain(summary))
    else:
        st.success(plain(summary))
    if report.failed:
        st.dataframe(
            pd.DataFrame([{"file": f.path, "reason": f.reason} for f in report.failed]),
            hide_index=True,
            width="stretch",
        )


def hit_grid(hits: Sequence[Hit], *, key: str, columns: int = 4) -> int | None:
    """Thumbnails with score, file name and size; returns the id of a hit whose 'More like this' was clicked."""
    clicked = None
    for start in range(0, len(hits), columns):
        row = st.columns(columns)
        for col, hit in zip(row, hits[start : start + columns], strict=False):
            with col, st.container(border=True):
                if hit.thumbnail:
                    st.image(hit.thumbnail, width="stretch")
                when = f" · {hit.timestamp:.1f} s" if hit.timestamp is not None else ""
                st.markdown(f"**{hit.score:.3f}** · {plain(hit.name)}{when}")
                st.caption(
                    f"{format_size(hit.size_bytes)} · {hit.width}×{hit.height} · {plain(hit.collection)}"
                )
                if st.button(
                    "More like this",
                    key=f"{key}-like-{hit.embedding_id}",
                    icon=":material/image_search:",
                ):
                    clicked = hit.embedding_id
    return clicked
