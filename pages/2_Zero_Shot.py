"""Zero-shot classification: what CLIP thinks an image shows, among your labels, why, and where."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import FramescopeError
from core.export import classification_to_csv
from core.format import format_timestamp
from core.media import load_image
from core.zeroshot import (
    DEFAULT_TEMPLATES,
    LABEL_PRESETS,
    WHERE_METHODS,
    classify,
    classify_folder,
    classify_video,
    embed_images,
    label_embeddings,
    overlay,
    parse_labels,
    parse_templates,
    where_map,
    where_map_cost,
)
from ui.components import (
    confusion_figure,
    label_bars,
    labels_over_time,
    plain,
    show_error,
    zeroshot_heatmap,
)
from ui.page import load_or_stop, start_page
from ui.resources import get_embedder
from ui.widgets import show_video_error, video_source

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
SOURCES = ["Upload images", "Images in the library", "Video frames", "A folder (batch)"]

page = start_page("Zero-shot classification")
settings = page.settings
library = page.library
embedder = load_or_stop(get_embedder)

sources = SOURCES if settings.mode == "local" else SOURCES[:3]
source = st.radio("Images from", sources, horizontal=True)
uploads, records, chosen, folder = [], [], None, ""
if source == "Upload images":
    uploads = (
        st.file_uploader("Images", type=IMAGE_TYPES, accept_multiple_files=True, key="zs-images")
        or []
    )
    given = "images:" + ",".join(u.file_id for u in uploads)
elif source == "Images in the library":
    names = [c.name for c in library.catalog.collections() if c.images]
    chosen_collections = st.multiselect("Collections", names, default=names[:1])
    records = [
        m
        for m in library.catalog.media(status="ok")
        if m.kind == "image" and m.collection in chosen_collections
    ][:500]
    st.caption(f"{len(records)} images (at most 500)")
    given = "library:" + ",".join(str(r.id) for r in records)
elif source == "Video frames":
    chosen = video_source("zs-video")
    every = st.number_input("Seconds between frames", 0.1, 600.0, 1.0, 0.5)
    given = f"video:{chosen.key}" if chosen is not None else "video:"
else:
    given = None  # the folder is typed in the form below

c1, c2, c3 = st.columns(3)
preset = c1.selectbox("Preset labels", ["(none)", *LABEL_PRESETS])
default_labels = ", ".join(LABEL_PRESETS[preset]) if preset != "(none)" else ""
multi_label = c2.radio("Mode", ["Single label", "Multi-label"], horizontal=True) == "Multi-label"
threshold = c3.slider("Multi-label threshold", 0.0, 1.0, 0.5, 0.05, disabled=not multi_label)
with st.form("zs-form", border=False):  # Enter in the folder box (Ctrl+Enter in the labels) runs it
    if source == "A folder (batch)":
        folder = st.text_input(
            "Folder (sub-folders named like labels give accuracy and a confusion matrix)",
            placeholder="/home/me/labelled",
        )
        given = f"folder:{folder.strip()}"
    labels_text = st.text_area(
        "Labels (comma or line separated)",
        value=default_labels,
        key=f"zs-labels-{preset}",
        height=80,
    )
    with st.expander(
        "Prompt templates (ensembled: each label's vector is the mean over templates)"
    ):
        templates_text = st.text_area(
            "One template per line; {} is the label", "\n".join(DEFAULT_TEMPLATES), height=200
        )
    run = st.form_submit_button("Classify", type="primary", icon=":material/label:")

if run:
    # A new run replaces what was shown: its results, or its error, and nothing older.
    st.session_state.pop("zeroshot", None)
    try:
        templates = parse_templates(templates_text)
        labels, warnings = parse_labels(labels_text, embedder, templates)
        for warning in warnings:
            st.warning(plain(warning))
        state: dict = {"labels": labels, "templates": templates, "for": given}
        if source == "Video frames":
            if chosen is None:
                raise FramescopeError("pick or upload a video first")
            limits = settings.video
            with st.spinner("Sampling and classifying frames…"):
                state["video"] = classify_video(
                    embedder,
                    chosen.path,
                    labels,
                    templates,
                    every=every,
                    multi_label=multi_label,
                    threshold=threshold,
                    limits=limits,
                )
        elif source == "A folder (batch)":
            with st.spinner("Classifying the folder…"):
                settings.check_folder_allowed(Path(folder).expanduser())
                state["folder"] = classify_folder(
                    embedder,
                    Path(folder).expanduser(),
                    labels,
                    templates,
                    multi_label=multi_label,
                    threshold=threshold,
                )
        else:
            if source == "Upload images":
                items = []
                failed = []
                for u in uploads:
                    try:
                        items.append(
                            (
                                u.name,
                                load_image(
                                    u.getvalue(),
                                    name=u.name,
                                    max_bytes=settings.max_image_bytes,
                                    max_pixels=settings.max_image_pixels,
                                ).image,
                            )
                        )
                    except FramescopeError as exc:
                        failed.append(str(exc))
            else:
                items, failed = [], []
                for r in records:
                    try:
                        items.append(
                            (
                                r.name,
                                load_image(
                                    Path(r.path),
                                    name=r.name,
                                    max_bytes=settings.max_image_bytes,
                                    max_pixels=settings.max_image_pixels,
                                ).image,
                            )
                        )
                    except FramescopeError as exc:
                        failed.append(str(exc))
            if not items:
                raise FramescopeError(
                    "no usable image: " + ("; ".join(failed) if failed else "add some images first")
                )
            batch = embed_images(embedder, [im for _, im in items])
            state["names"] = [n for n, _ in items]
            state["images"] = [im.copy() for _, im in items]
            for im in state["images"]:
                im.thumbnail((768, 768))
            state["result"] = classify(
                embedder,
                batch.vectors,
                labels,
                templates,
                multi_label=multi_label,
                threshold=threshold,
            )
            state["failed"] = failed
        st.session_state["zeroshot"] = state
    except FramescopeError as exc:
        show_video_error(exc, chosen)

state = st.session_state.get("zeroshot")
if state and state.get("for") != given:
    state = None  # made for other images, another video or folder: not shown for these
if state and "result" in state:
    result, names = state["result"], state["names"]
    for reason in state.get("failed", []):
        st.warning(plain(reason))
    values = result.scores if result.multi_label else result.probs
    what = "score (label on its own)" if result.multi_label else "probability"
    st.subheader("Image × label heatmap")
    st.plotly_chart(zeroshot_heatmap(result.cosine, result.labels, names), key="zs-heat")
    st.download_button(
        "Export CSV",
        classification_to_csv(names, result),
        "framescope-zeroshot.csv",
        "text/csv",
        icon=":material/download:",
    )

    st.subheader("Per image")
    pick = st.selectbox("Image", range(len(names)), format_func=lambda i: f"{i + 1}. {names[i]}")
    left, right = st.columns(2)
    order = np.argsort(-values[pick])
    bars = label_bars(values[pick][order], [result.labels[j] for j in order], what)
    right.plotly_chart(bars, key="zs-bars")
    right.dataframe(
        pd.DataFrame(
            {
                "label": [result.labels[j] for j in order],
                what: values[pick][order].round(4),
                "cosine": result.cosine[pick][order].round(4),
            }
        ),
        hide_index=True,
        width="stretch",
    )
    w1, w2, w3 = left.columns(3)
    label = w1.selectbox("Where is", result.labels, index=int(order[0]))
    method = w2.selectbox(
        "Method",
        WHERE_METHODS,
        help="patch: similarity of each patch token (1 forward pass); occlusion: drop in similarity when each cell is hidden (49 passes).",
    )
    opacity = w3.slider("Opacity", 0.0, 1.0, 0.5, 0.05)
    try:
        vector = label_embeddings(embedder, result.labels, result.templates)[
            result.labels.index(label)
        ]
        key = ("zs-map", pick, label, method, result.labels, result.templates)
        if st.session_state.get("zs-map-key") != key:
            st.session_state["zs-map"] = where_map(embedder, state["images"][pick], vector, method)
            st.session_state["zs-map-key"] = key
        left.image(
            overlay(state["images"][pick], st.session_state["zs-map"], opacity),
            caption=f"where “{label}” matches ({method}, {where_map_cost(method)} forward passes)",
            width="stretch",
        )
    except FramescopeError as exc:
        show_error(exc)

if state and "video" in state:
    frames = state["video"]
    c = frames.classification
    values = c.scores if c.multi_label else c.probs
    what = "score (label on its own)" if c.multi_label else "probability"
    chart = labels_over_time(frames.timestamps, values, c.labels, what)
    st.subheader("Labels over time")
    st.plotly_chart(chart, key="zs-timeline")
    if frames.truncated:
        st.warning(plain(chosen.mention(frames.truncated) if chosen else frames.truncated))
    st.download_button(
        "Export CSV",
        classification_to_csv([format_timestamp(t) for t in frames.timestamps], c),
        "framescope-zeroshot-video.csv",
        "text/csv",
        icon=":material/download:",
    )

if state and "folder" in state:
    batch = state["folder"]
    st.download_button(
        "Export CSV",
        batch.to_csv(),
        "framescope-zeroshot-folder.csv",
        "text/csv",
        icon=":material/download:",
    )
    for failed in batch.failed:
        st.warning(plain(f"{failed.path}: {failed.reason}"))
    evaluation = batch.evaluate()
    if evaluation.evaluated:
        st.metric(
            "Accuracy",
            f"{evaluation.accuracy:.1%}",
            help=f"{evaluation.evaluated} images in folders named like labels; {evaluation.skipped} others not counted",
        )
        st.dataframe(
            pd.DataFrame([{"label": k, "recall": v} for k, v in evaluation.recall.items()]),
            hide_index=True,
        )
        confusion = confusion_figure(evaluation.confusion, evaluation.labels)
        st.plotly_chart(confusion, key="zs-confusion")
    else:
        st.info("No sub-folder is named like a label, so there is no accuracy to show.")
    st.dataframe(
        pd.DataFrame({"path": batch.paths, "top label": batch.classification.top_labels}),
        hide_index=True,
        width="stretch",
    )
