"""Frame search: find moments in videos by text or image, play them, refine by marking hits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st

from core.errors import FramescopeError
from core.export import label_rows, rows_to_csv
from core.media import load_image
from core.search import (
    collapse_hits,
    describe_search,
    fuse_caption_scores,
    rank_frames,
    refine_frames,
)
from core.search.feedback import METHODS, PRIOR_WEIGHT, PROPAGATION, project_2d
from core.types import Sampling
from ui.components import (
    ProgressBar,
    frame_grid,
    index_report,
    map_figure,
    plain,
    scope_summary,
    show_error,
    timeline_figure,
    video_chart_names,
    video_choice_labels,
)
from ui.page import load_or_stop, start_page
from ui.resources import get_embedder, get_indexer
from ui.widgets import add_from_link, play

VIDEO_TYPES = ["mp4", "m4v", "mov", "avi", "mkv", "webm"]
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
METHOD_NAMES = {"propagation": "Label propagation", "rocchio": "Rocchio"}

page = start_page("Frame search")
settings = page.settings
library = page.library
embedder = load_or_stop(get_embedder)

tab_search, tab_add = st.tabs(["Search frames", "Add videos"])

with tab_add:
    collection = st.text_input("Collection", value="videos", key="video-collection")
    c1, c2, c3, c4 = st.columns(4)
    every = c1.number_input("Seconds between frames", 0.1, 600.0, float(settings.frame_every), 0.5)
    max_frames = c2.number_input("Most frames per video", 1, 100_000, settings.max_frames, 100)
    scenes = c3.toggle("One frame per shot (scene mode)", value=False)
    dedup = c4.slider(
        "Drop near-duplicates above",
        0.5,
        1.0,
        settings.dedup_threshold,
        0.01,
        help="CLIP cosine to the last kept frame; 1 keeps every frame",
    )
    sampling = Sampling(every=every, max_frames=int(max_frames), scenes=scenes, dedup=dedup)
    uploads = st.file_uploader(
        "Upload videos", type=VIDEO_TYPES, accept_multiple_files=True, key="video-uploads"
    )
    if st.button("Add uploaded videos", disabled=not uploads, icon=":material/upload:"):
        try:
            with ProgressBar("Adding videos") as progress:
                st.session_state["video_report"] = get_indexer().index_uploads(
                    [(u.name, u.getvalue()) for u in uploads],
                    collection,
                    sampling=sampling,
                    job=progress.job,
                )
        except FramescopeError as exc:
            show_error(exc)
    if settings.mode == "local":
        with st.form("video-path", border=False):  # Enter in the box indexes too
            path = st.text_input(
                "Video file or folder on this computer", placeholder="/home/me/Videos/dashcam"
            )
            index_path = st.form_submit_button("Index videos", icon=":material/folder_open:")
        if index_path and path.strip():
            try:
                with ProgressBar("Indexing") as progress:
                    st.session_state["video_report"] = get_indexer().index(
                        [path.strip()], collection, sampling=sampling, job=progress.job
                    )
            except FramescopeError as exc:
                show_error(exc)
    add_from_link("video-link", collection, sampling=sampling)
    if report := st.session_state.get("video_report"):
        index_report(report)
    st.caption(
        "Leaving the page stops indexing; frames stored so far are kept, and adding the same video again continues from there."
    )

with tab_search:
    videos = library.catalog.videos()
    if not videos:
        st.info("No videos yet: add some in the **Add videos** tab.")
        st.stop()
    by_id = {v.id: v for v in videos}
    labels = video_choice_labels(videos)
    # The filter keeps what the user took out, and takes in every video added since it was last
    # shown (here, on another page, or by the CLI): a search right after adding covers them.
    known = st.session_state.get("fs-known-videos")
    if known is None or "fs-videos" not in st.session_state:
        st.session_state["fs-videos"] = list(by_id)
    else:
        kept = [i for i in st.session_state["fs-videos"] if i in by_id]
        st.session_state["fs-videos"] = kept + [i for i in by_id if i not in known]
    st.session_state["fs-known-videos"] = set(by_id)
    chosen = st.multiselect("Videos", list(by_id), format_func=labels.get, key="fs-videos")
    for media_id in chosen:
        if by_id[media_id].note:  # e.g. a truncated video: which part of it has frames
            st.caption(f"{plain(labels[media_id])}: {plain(by_id[media_id].note)}")
    o1, o2, o3 = st.columns(3)
    include_images = o1.toggle("Search images too", key="fs-images")
    use_captions = o3.toggle(
        "Match captions too",
        key="fs-captions",
        help="Frames captioned on the Video captions page also rank by their caption text, fused with CLIP (reciprocal-rank fusion).",
    )
    group_shots = o2.toggle(
        "Group adjacent frames of a shot",
        value=True,
        key="fs-group",
        help="Hits next to each other in one shot show as one moment with “n more”.",
    )
    with st.form("frame-search"):
        text = st.text_input(
            "Search for",
            placeholder="a white car changing lanes",
            help='"+term" adds a concept, "-term" pushes one away.',
        )
        example = st.file_uploader("…or by an example image", type=IMAGE_TYPES, key="fs-example")
        k = st.slider("Hits", 4, 60, 12, 4)
        submitted = st.form_submit_button("Search", type="primary", icon=":material/search:")

    state = st.session_state.setdefault("fs", {})
    if submitted:
        scope = list(chosen)
        if include_images:
            scope += [m.id for m in library.catalog.media(status="ok") if m.kind == "image"]
        try:
            images, names = [], []
            if example is not None:
                images.append(
                    load_image(
                        example.getvalue(),
                        name=example.name,
                        max_bytes=settings.max_image_bytes,
                        max_pixels=settings.max_image_pixels,
                    ).image
                )
                names.append(example.name)
            ranking = rank_frames(
                library, embedder, text, media_ids=scope, images=images, image_names=names
            )
            if use_captions and text.strip():
                ranking = fuse_caption_scores(library, ranking, text)
            state.clear()
            state.update(
                ranking=ranking,
                query_scores=ranking.scores,
                searched=describe_search(text, names),
                marks={},
                history=[],
                moves={},
                round=0,
                k=k,
            )
        except FramescopeError as exc:
            state.clear()
            show_error(exc)

    ranking = state.get("ranking")
    if ranking is not None:
        marks: dict[int, int] = state["marks"]
        k = state.get("k", 12)

        def play_moment(media_id: int, timestamp: float) -> None:
            """The video from that moment, in a dialog in front of the page, playing."""
            record = by_id.get(media_id)
            if record is None:
                st.warning("That video is no longer in the library.", icon=":material/warning:")
                return
            play(Path(record.path), timestamp, title=labels[media_id])

        top = library.vectors.hits(ranking.top(3 * k))
        position = {int(e): i for i, e in enumerate(ranking.ids)}
        _, _, _, scope_vectors = library.vectors.scope_frames(
            embedder.key, media_ids=sorted(set(ranking.media_ids.tolist()))
        )
        vectors = {
            h.embedding_id: scope_vectors[position[h.embedding_id]]
            for h in top
            if h.embedding_id in position
        }
        window = 1.5 * settings.frame_every if group_shots else 0.0
        groups = collapse_hits(top, window=window, vectors=vectors)[:k]
        round_note = f" · feedback round {state['round']}" if state["round"] else ""
        searched = state.get("searched") or f"“{ranking.query}”"
        st.caption(
            f"Top {len(groups)} moments for {plain(searched)} in {plain(scope_summary(ranking))}{round_note}"
        )
        action = frame_grid(groups, marks, state["moves"], key=f"fs{state['round']}")
        if action is not None:
            kind, hit = action
            if kind == "play":
                play_moment(hit.media_id, hit.timestamp or 0.0)
            else:
                value = 1 if kind == "relevant" else -1
                if marks.get(hit.embedding_id) == value:
                    marks.pop(hit.embedding_id)
                else:
                    marks[hit.embedding_id] = value
                st.rerun()

        st.subheader("Refine")
        r1, r2, r3, r4, r5 = st.columns([2, 2, 1, 1, 1])
        method = r1.radio(
            "Method", METHODS, format_func=METHOD_NAMES.get, horizontal=True, key="fs-method"
        )
        prior = r2.slider(
            "Weight of the original query",
            0.0,
            1.0,
            PRIOR_WEIGHT,
            0.05,
            disabled=method != PROPAGATION,
            help="Label propagation keeps the query as a prior; 0 follows the marks alone.",
        )
        st.caption(
            f"{sum(1 for v in marks.values() if v > 0)} marked relevant, {sum(1 for v in marks.values() if v < 0)} irrelevant"
        )
        if r3.button("Refine", type="primary", disabled=not marks, icon=":material/auto_awesome:"):
            try:
                before = ranking.ranks()
                refined = refine_frames(
                    library,
                    embedder.key,
                    ranking,
                    state["query_scores"],
                    marks,
                    method=method,
                    prior_weight=prior,
                )
                after = refined.ranks()
                state["history"].append((ranking, state["moves"]))
                state["moves"] = {
                    eid: before[eid] - rank for eid, rank in after.items() if rank <= 3 * k
                }
                state["ranking"] = refined
                state["round"] += 1
                st.rerun()
            except FramescopeError as exc:
                show_error(exc)
        if r4.button("Undo", disabled=not state["history"], icon=":material/undo:"):
            state["ranking"], state["moves"] = state["history"].pop()
            state["round"] -= 1
            st.rerun()
        if r5.button(
            "Reset", disabled=not (state["history"] or marks), icon=":material/restart_alt:"
        ):
            first = state["history"][0][0] if state["history"] else ranking
            state.update(
                ranking=first.with_scores(state["query_scores"]),
                marks={},
                history=[],
                moves={},
                round=0,
            )
            st.rerun()

        # Views: score over time per video, and a map of the scope. A clicked point plays from
        # there; the chart then starts afresh (a new key), so the point does not play again on
        # every later rerun while it stays selected.
        clicks = state.setdefault("timeline_clicks", 0)
        timeline = st.plotly_chart(
            timeline_figure(ranking, video_chart_names(videos), marks),
            on_select="rerun",
            selection_mode="points",
            key=f"fs-timeline-{state['round']}-{clicks}",
        )
        points = (timeline or {}).get("selection", {}).get("points", []) if timeline else []
        if points:
            chosen_id = points[0].get("customdata")
            if isinstance(chosen_id, list):
                chosen_id = chosen_id[0]
            where = np.flatnonzero(ranking.ids == int(chosen_id)) if chosen_id is not None else []
            if len(where):
                at = int(where[0])
                state["timeline_clicks"] = clicks + 1
                play_moment(int(ranking.media_ids[at]), float(ranking.timestamps[at]))
        with st.expander("Map of the frames", expanded=False):
            _, _, _, vectors = library.vectors.scope_frames(
                embedder.key, media_ids=sorted(set(ranking.media_ids.tolist()))
            )
            st.plotly_chart(
                map_figure(project_2d(vectors), ranking, marks), key=f"fs-map-{state['round']}"
            )

        if marks:
            rows = label_rows(library, marks)
            e1, e2, _ = st.columns([1, 1, 4])
            e1.download_button(
                "Labels CSV",
                rows_to_csv(rows),
                "framescope-labels.csv",
                "text/csv",
                icon=":material/download:",
                help="The marked frames (video, path, time, label) as CSV, for a training set",
            )
            e2.download_button(
                "Labels JSON",
                json.dumps(rows, indent=2),
                "framescope-labels.json",
                "application/json",
                icon=":material/download:",
                help="The marked frames (video, path, time, label) as JSON, for a training set",
            )
