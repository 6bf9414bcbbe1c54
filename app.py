"""Framescope's navigation frame: the page setup once, then the page the user chose."""

from __future__ import annotations

import streamlit as st

from ui.page import FRAME, WANTED

st.set_page_config(page_title="Framescope", page_icon=":material/frame_inspect:", layout="wide")

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page(
        "pages/1_Image_Search.py",
        title="Image search",
        icon=":material/image_search:",
        url_path="Image_Search",
    ),
    st.Page(
        "pages/6_Frame_Search.py",
        title="Frame search",
        icon=":material/movie:",
        url_path="Frame_Search",
    ),
    st.Page(
        "pages/2_Zero_Shot.py", title="Zero shot", icon=":material/label:", url_path="Zero_Shot"
    ),
    st.Page(
        "pages/3_Video_Captions.py",
        title="Video captions",
        icon=":material/subtitles:",
        url_path="Video_Captions",
    ),
    st.Page("pages/4_Video_QA.py", title="Video QA", icon=":material/forum:", url_path="Video_QA"),
    st.Page(
        "pages/5_Video_Summary.py",
        title="Video summary",
        icon=":material/summarize:",
        url_path="Video_Summary",
    ),
]

# A page opened by its address before this frame ever ran (a bookmark, a fresh server) is run by
# Streamlit on its own; ui.page.start_page sends it here, and it is shown inside the frame.
st.session_state[FRAME] = True
page = st.navigation(PAGES)
wanted = st.session_state.pop(WANTED, None)
target = next((p for p in PAGES if p.url_path == wanted), None)
if target is not None and target.url_path != page.url_path:
    st.switch_page(target)
page.run()
