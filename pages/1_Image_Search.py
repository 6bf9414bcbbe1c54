"""Image search: add folders or uploads to the library, then search by text, example image, or both."""

from __future__ import annotations

import streamlit as st

from core.errors import FramescopeError
from core.export import hits_to_csv, hits_to_json
from core.media import load_image
from core.search import describe_search, search
from ui.components import ProgressBar, hit_grid, index_report, plain, show_error
from ui.page import load_or_stop, start_page
from ui.resources import get_embedder, get_indexer

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]

page = start_page("Image search")
settings = page.settings
library = page.library
embedder = load_or_stop(get_embedder)

image_collections = [c.name for c in library.catalog.collections() if c.images]
tab_search, tab_add = st.tabs(["Search", "Add images"])

with tab_add:
    collection = st.text_input(
        "Collection",
        value=image_collections[0] if image_collections else "default",
        help="Images are grouped in named collections; a new name creates one.",
    )
    uploads = st.file_uploader(
        "Upload images", type=IMAGE_TYPES, accept_multiple_files=True, key="uploads"
    )
    if st.button("Add uploaded images", disabled=not uploads, icon=":material/upload:"):
        try:
            with ProgressBar("Adding uploads") as progress:
                st.session_state["index_report"] = get_indexer().index_uploads(
                    [(u.name, u.getvalue()) for u in uploads], collection, job=progress.job
                )
        except FramescopeError as exc:
            show_error(exc)
    st.divider()
    roots = [str(r) for r in settings.roots]
    if settings.mode == "shared" and not roots:
        st.info("Folder indexing is off: this shared deployment has no FRAMESCOPE_ROOTS.")
    else:
        with st.form("index-folder", border=False):  # Enter in the box indexes, as the button does
            if settings.mode == "shared":
                root = st.selectbox("Allowed folder", roots)
                sub = st.text_input("Sub-folder (optional)", placeholder="holidays/2024")
                folder = f"{root}/{sub.strip().lstrip('/')}" if sub.strip() else root
            else:
                folder = st.text_input(
                    "Folder on this computer (searched recursively)",
                    placeholder="/home/me/Pictures",
                )
            st.caption("Images only: videos in the folder are left for **Frame search**.")
            index_folder = st.form_submit_button("Index folder", icon=":material/folder_open:")
        if index_folder and not folder.strip():
            st.error("Type the folder to index first.", icon=":material/error:")
        elif index_folder:
            try:
                with ProgressBar("Indexing") as progress:
                    st.session_state["index_report"] = get_indexer().index(
                        [folder.strip()], collection, job=progress.job, images_only=True
                    )
            except FramescopeError as exc:
                show_error(exc)
    if report := st.session_state.get("index_report"):
        index_report(report)
        if report.skipped_videos:
            st.info(
                f"{report.skipped_videos} video{'s' if report.skipped_videos > 1 else ''} in the "
                "folder left for **Frame search**: add them there (Frame search → Add videos) to "
                "search their frames.",
                icon=":material/movie:",
            )
    st.caption(
        "Leaving the page stops indexing; everything added so far is kept, and indexing the same folder again resumes."
    )

with tab_search:
    # Read after the Add images tab has run: what it just added is searchable at once. Search
    # ranks images and video frames: every collection that holds either can have hits.
    collections = library.catalog.collections()
    image_collections = [c.name for c in collections if c.images]
    collection_names = [c.name for c in collections if c.images or c.videos]
    if not collection_names:
        st.info("The library has no images yet: add some in the **Add images** tab.")
    elif not image_collections:
        st.info(
            "The library has no images yet, only videos (their frames are searched too): add "
            "images in the **Add images** tab."
        )
    with st.form("image-search"):
        text = st.text_input(
            "Search for",
            placeholder="a dog on a beach  +sunset  -people",
            help='Words to look for. "+term" adds a concept, "-term" pushes one away; quotes group words: +"red car".',
        )
        example = st.file_uploader("…or by an example image", type=IMAGE_TYPES, key="example")
        c1, c2, c3 = st.columns(3)
        weight = c1.slider("Image weight, when text and image are both given", 0.0, 1.0, 0.5, 0.05)
        k = c2.slider("Hits", 4, 100, 24, 4)
        scope = c3.multiselect("Collections", collection_names, default=collection_names)
        submitted = st.form_submit_button("Search", type="primary", icon=":material/search:")
    show_all = st.toggle("Show hits below the relevance cutoff", key="show_all")

    query = None
    if submitted:
        query = {
            "text": text,
            "example": example,
            "like": [],
            "more_like_this": False,
            "weight": weight,
            "k": k,
            "scope": scope,
        }
    elif (like := st.session_state.pop("like", None)) is not None:
        query = {
            "text": "",
            "example": None,
            "like": [like],
            "more_like_this": True,
            "weight": weight,
            "k": k,
            "scope": scope,
        }
    if query is not None:
        try:
            images, names = [], []
            if query["example"] is not None:
                loaded = load_image(
                    query["example"].getvalue(),
                    name=query["example"].name,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_image_pixels,
                )
                images.append(loaded.image)
                names.append(query["example"].name)
            result = search(
                library,
                embedder,
                query["text"],
                images=images,
                image_names=names,
                like=query["like"],
                image_weight=query["weight"],
                k=query["k"],
                collections=None
                if set(query["scope"]) == set(collection_names) and query["scope"]
                else query["scope"],
            )
            # What the caption says was searched for: what the search used, not what the boxes
            # hold now ("more like this" uses the hit's image alone).
            searched = (
                f"like {', '.join(result.examples)} (More like this)"
                if query["more_like_this"]
                else f"for {describe_search(result.text, result.examples)}"
            )
            st.session_state["search_result"] = result
            st.session_state["searched"] = searched
        except FramescopeError as exc:
            st.session_state.pop("search_result", None)
            show_error(exc)

    if result := st.session_state.get("search_result"):
        hits = result.hits if show_all else result.shown
        note = (
            f" · {result.hidden_count} below the relevance cutoff hidden"
            if result.hidden_count and not show_all
            else ""
        )
        searched = st.session_state.get("searched") or f"for “{result.query}”"
        st.caption(f"{len(hits)} hits {plain(searched)}{note}")
        d1, d2, _ = st.columns([1, 1, 4])
        d1.download_button(
            "Export CSV",
            hits_to_csv(hits),
            "framescope-hits.csv",
            "text/csv",
            icon=":material/download:",
        )
        d2.download_button(
            "Export JSON",
            hits_to_json(result, include_hidden=show_all),
            "framescope-hits.json",
            "application/json",
            icon=":material/download:",
        )
        clicked = hit_grid(hits, key="image-search")
        if clicked is not None:
            st.session_state["like"] = clicked
            st.rerun()
