"""Render helpers: banners, errors, progress, the hit grid. Untrusted text is always shown inert."""

from __future__ import annotations

import html
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from core.config import Settings
from core.errors import FramescopeError
from core.format import format_duration, format_size, format_timestamp
from core.jobs import SLOTS, Job, Step
from core.types import Hit, IndexReport, MediaRecord

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def plain(text: str | None) -> str:
    """Escape text (file names, model output, metadata) for Markdown: no links, images, HTML, emoji."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text or "").replace("\n", " ")


def chart_label(text: object) -> str:
    """Text for a Plotly label (axis tick, legend entry, hover name). Plotly renders HTML tags in
    labels (`<a href>` as a live link, `<b>`, `<br>`...), so `<`, `>` and `&` are escaped: a name,
    a title or a model's words are shown literally."""
    return html.escape(str(text), quote=False)


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
    """A Streamlit progress bar for a long job, with a Stop button while it runs. Use it as a
    context manager and pass its `job` to the work: bar and button go when the job ends."""

    def __init__(self, label: str) -> None:
        from ui.resources import current_user, get_settings

        # In shared mode each user runs at most FRAMESCOPE_USER_JOBS jobs at once (AccessDenied).
        self._slot = SLOTS.hold(current_user(), get_settings().user_jobs)
        self._slot.__enter__()
        self.label = label
        self.bar = st.progress(0.0, text=label)
        self.stop = stop_button(f"stop-{label}")
        self.last = 0.0
        self.job = Job(on_progress=self.show)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the bar and its button: what the job did is shown by the page."""
        self.stop.empty()
        self.bar.empty()
        self._release()

    def _release(self) -> None:
        if self._slot is not None:
            self._slot.__exit__(None, None, None)
            self._slot = None

    def show(self, step: Step) -> None:
        now = time.monotonic()
        if step.message != "done" and now - self.last < 0.25:
            return
        self.last = now
        what = f"{self.label} · {step.stage}" if step.stage else self.label
        if step.total:
            done = int(step.done) if float(step.done).is_integer() else round(step.done, 1)
            total = int(step.total) if float(step.total).is_integer() else step.total
            what += f": {done}/{total}"
        self.bar.progress(step.fraction or 0.0, text=f"{what} · {step.message}")


def index_report(report: IndexReport) -> None:
    """The outcome of an indexing run, failures listed with their reasons, and the notes of what
    was indexed with a caveat (a truncated video: up to when its frames decoded)."""
    from core.indexing import index_report_lines

    summary = index_report_lines(report)[0]
    if report.interrupted:
        st.warning(plain(summary) + " · stopped before the end; run it again to resume.")
    elif report.failed or report.warnings:
        st.warning(plain(summary))
    else:
        st.success(plain(summary))
    for note in report.warnings:
        st.warning(f"{plain(note.path)}: {plain(note.reason)}", icon=":material/warning:")
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
                when = (
                    f" · frame at {format_timestamp(hit.timestamp)}"
                    if hit.timestamp is not None
                    else ""
                )
                st.markdown(f"**{hit.score:.3f}** · {plain(hit.name)}{when}")
                st.caption(
                    f"{format_size(hit.size_bytes)} · {hit.width}×{hit.height} · {plain(hit.collection)}"
                )
                if hit.copies:  # one file at several paths: one hit that lists them
                    st.caption(
                        f"{len(hit.paths)} copies: " + " · ".join(plain(p) for p in hit.paths)
                    )
                if st.button(
                    "More like this",
                    key=f"{key}-like-{hit.embedding_id}",
                    icon=":material/image_search:",
                ):
                    clicked = hit.embedding_id
    return clicked


def note_label(note: str) -> str:
    """A video's note, short enough for a list: a truncated video says up to when it has frames."""
    stopped = re.search(r"stopped at ([\d.]+) s", note)
    if stopped:
        return f"truncated: frames up to {format_timestamp(float(stopped.group(1)))}"
    return "truncated" if "truncated" in note else "see its note"


def _unique(labels: dict[int, str], more) -> dict[int, str]:
    """The labels, those shared by several ids with `more(id)` added."""
    counts = Counter(labels.values())
    return {i: f"{t} · {more(i)}" if counts[t] > 1 else t for i, t in labels.items()}


def video_choice_labels(videos: Sequence[MediaRecord]) -> dict[int, str]:
    """How the videos are listed in a filter, by id: name and collection (two box.mp4 from two
    collections told apart), length, and what is wrong with one (truncated: up to when it has
    frames; still being indexed). Labels still alike get the video's folder, then its id."""
    by_id = {v.id: v for v in videos}

    def label(v: MediaRecord) -> str:
        parts = [v.name, v.collection]
        if v.duration:
            parts.append(format_duration(v.duration))
        if v.status == "partial":
            parts.append("partly indexed")
        if v.note:
            parts.append(note_label(v.note))
        return " · ".join(parts)

    labels = _unique(
        {v.id: label(v) for v in videos},
        lambda i: f"in {Path(by_id[i].path).parent.name or by_id[i].path}",
    )
    return _unique(labels, lambda i: f"#{i}")


def video_chart_names(videos: Sequence[MediaRecord]) -> dict[int, str]:
    """Chart legend names by video id: the name and collection (with the id when still alike)."""
    return _unique({v.id: f"{v.name} · {v.collection}" for v in videos}, lambda i: f"#{i}")


def scope_summary(ranking) -> str:
    """What a frame search ranked: "2 videos (118 frames) and 3 images"."""
    import numpy as np

    images = np.isnan(ranking.timestamps)
    videos = len(np.unique(ranking.media_ids[~images]))
    frames = int((~images).sum())
    text = (
        f"{videos} video{'' if videos == 1 else 's'} ({frames} frame{'' if frames == 1 else 's'})"
    )
    pictures = len(np.unique(ranking.media_ids[images]))
    if pictures:
        text += f" and {pictures} image{'' if pictures == 1 else 's'}"
    return text


def timeline_figure(ranking, names: dict[int, str], marks: dict[int, int]):
    """Plotly: each video's score over time, marked frames as green (relevant) or red (irrelevant) points."""
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure()
    for media_id in dict.fromkeys(ranking.media_ids.tolist()):
        sel = (ranking.media_ids == media_id) & ~np.isnan(ranking.timestamps)
        if not sel.any():
            continue
        fig.add_trace(
            go.Scatter(
                x=ranking.timestamps[sel],
                y=ranking.scores[sel],
                mode="lines+markers",
                name=chart_label(names.get(media_id, str(media_id))),
                customdata=ranking.ids[sel],
                marker={"size": 5},
                hovertemplate="%{x:.1f} s · score %{y:.3f}<extra>%{fullData.name}</extra>",
            )
        )
    for label, colour, name in ((1, "#1a7f37", "relevant"), (-1, "#cf222e", "irrelevant")):
        chosen = np.isin(ranking.ids, [i for i, v in marks.items() if v == label]) & ~np.isnan(
            ranking.timestamps
        )
        if chosen.any():
            fig.add_trace(
                go.Scatter(
                    x=ranking.timestamps[chosen],
                    y=ranking.scores[chosen],
                    mode="markers",
                    name=name,
                    customdata=ranking.ids[chosen],
                    marker={
                        "size": 12,
                        "color": colour,
                        "symbol": "circle-open",
                        "line": {"width": 3},
                    },
                )
            )
    fig.update_layout(
        height=300,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="seconds",
        yaxis_title="score",
        title="Score over time (click a point to play from there)",
    )
    return fig


def zeroshot_heatmap(cosine, labels: Sequence[str], names: Sequence[str]):
    """Plotly: images (rows, numbered names) × labels (columns), each cell the cosine."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Heatmap(
            z=cosine,
            x=[chart_label(label) for label in labels],
            y=[chart_label(f"{i + 1}. {n}") for i, n in enumerate(names)],
            texttemplate="%{z:.3f}",
            colorscale="Viridis",
            colorbar={"title": "cosine"},
        )
    )
    fig.update_layout(
        height=120 + 40 * len(names),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis={"autorange": "reversed"},
    )
    return fig


def label_bars(values, labels: Sequence[str], what: str):
    """Plotly: one horizontal bar per label (in the order given), its length the value."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Bar(
            x=list(values),
            y=[chart_label(label) for label in labels],
            orientation="h",
            hovertemplate=f"%{{y}} · {chart_label(what)} %{{x:.3f}}<extra></extra>",
        )
    )
    fig.update_layout(
        height=80 + 28 * len(labels),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis_title=chart_label(what),
        yaxis={"autorange": "reversed"},
    )
    return fig


def labels_over_time(timestamps, values, labels: Sequence[str], what: str = "probability"):
    """Plotly: each label's value over a video's sampled frames, one line per label."""
    import numpy as np
    import plotly.graph_objects as go

    values = np.asarray(values)
    fig = go.Figure()
    for j, label in enumerate(labels):
        fig.add_trace(
            go.Scatter(
                x=list(timestamps),
                y=values[:, j],
                mode="lines",
                name=chart_label(label),
                hovertemplate=f"%{{x:.1f}} s · {chart_label(what)} %{{y:.3f}}"
                "<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="Each label over time",
        xaxis_title="seconds",
        yaxis_title=chart_label(what),
        legend_title_text="label",
    )
    return fig


def confusion_figure(confusion, labels: Sequence[str]):
    """Plotly: a confusion matrix, true labels (rows) × predicted labels (columns), with counts."""
    import plotly.express as px

    names = [chart_label(label) for label in labels]
    return px.imshow(
        confusion,
        x=names,
        y=names,
        text_auto=True,
        labels={"x": "predicted", "y": "true"},
    )


def map_figure(points, ranking, marks: dict[int, int]):
    """Plotly: the scope's frames in 2-D (PCA), coloured by score, marked frames outlined."""
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            customdata=ranking.ids,
            name="frames",
            marker={
                "size": 6,
                "color": ranking.scores,
                "colorscale": "Viridis",
                "colorbar": {"title": "score"},
            },
            hovertemplate="score %{marker.color:.3f}<extra></extra>",
        )
    )
    for label, colour, name in ((1, "#1a7f37", "relevant"), (-1, "#cf222e", "irrelevant")):
        chosen = np.isin(ranking.ids, [i for i, v in marks.items() if v == label])
        if chosen.any():
            fig.add_trace(
                go.Scatter(
                    x=points[chosen, 0],
                    y=points[chosen, 1],
                    mode="markers",
                    name=name,
                    marker={
                        "size": 14,
                        "color": "rgba(0,0,0,0)",
                        "line": {"width": 3, "color": colour},
                    },
                )
            )
    fig.update_layout(
        height=420,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="Map of the frames (PCA)",
        showlegend=True,
        # Below the plot, across: the colour bar (and its title) keeps the right-hand side.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.08, "yanchor": "top"},
    )
    return fig


def frame_grid(
    groups, marks: dict[int, int], moves: dict[int, int | None], *, key: str, columns: int = 4
) -> tuple[str, Hit] | None:
    """Collapsed frame hits with thumbnail, video, time, score, movement since the last round, and
    Play / relevant / irrelevant buttons. Returns the action clicked: ("play" | "relevant" |
    "irrelevant", hit), or None."""
    from core.format import format_timestamp

    action = None
    for start in range(0, len(groups), columns):
        row = st.columns(columns)
        for col, group in zip(row, groups[start : start + columns], strict=False):
            hit = group.best
            mark = marks.get(hit.embedding_id)
            with col, st.container(border=True):
                if hit.thumbnail:
                    st.image(hit.thumbnail, width="stretch")
                when = format_timestamp(hit.timestamp) if hit.timestamp is not None else "image"
                move = moves.get(hit.embedding_id, 0)
                arrow = (
                    "new"
                    if move is None
                    else (f"▲{move}" if move > 0 else f"▼{-move}" if move < 0 else "")
                )
                st.markdown(f"**{hit.score:.3f}** · {plain(hit.name)} · {when} {arrow}")
                extra = f"+{group.more} more in this shot · " if group.more else ""
                state = {1: "marked relevant", -1: "marked irrelevant"}.get(mark, "not marked")
                st.caption(f"{extra}{plain(hit.collection)} · {state}")  # same names told apart
                if st.button(
                    "Play",
                    key=f"{key}-play-{hit.embedding_id}",
                    icon=":material/play_arrow:",
                    disabled=hit.timestamp is None,
                    width="stretch",
                ):
                    action = ("play", hit)
                b1, b2 = st.columns(2)
                if b1.button(
                    "Yes",
                    key=f"{key}-yes-{hit.embedding_id}",
                    icon=":material/thumb_up:",
                    help="mark relevant",
                    type="primary" if mark == 1 else "secondary",
                    width="stretch",
                ):
                    action = ("relevant", hit)
                if b2.button(
                    "No",
                    key=f"{key}-no-{hit.embedding_id}",
                    icon=":material/thumb_down:",
                    help="mark irrelevant",
                    type="primary" if mark == -1 else "secondary",
                    width="stretch",
                ):
                    action = ("irrelevant", hit)
    return action


def stop_button(key: str):
    """A Stop button shown while a long job runs: pressing it makes Streamlit rerun the page,
    which interrupts the job at its next progress update. Work written so far is kept. Returns
    its placeholder: call `.empty()` on it when the job is over."""
    slot = st.empty()
    slot.button(
        "Stop", key=key, icon=":material/stop_circle:", help="Stop here; run again later to resume."
    )
    return slot
