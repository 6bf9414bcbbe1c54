"""Untrusted names shown inertly: Plotly chart labels (HTML escaped), terminal output (control
characters escaped), and a too-long caption prompt refused on the Captions page."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import streamlit as st
from conftest import require_media, run_cli
from streamlit.testing.v1 import AppTest

from core.cli.progress import printable
from ui.components import (
    chart_label,
    confusion_figure,
    label_bars,
    labels_over_time,
    timeline_figure,
    zeroshot_heatmap,
)

ROOT = Path(__file__).resolve().parents[1]
EVIL = '<a href="https://evil.example">x</a>.jpg'
BOLD = "<b>bold</b> & <br>more"
TIMEOUT = 180


def chart_strings(spec) -> list[str]:
    """Every string in a figure's JSON, decoded (Plotly writes `<` as \\u003c in its JSON), but
    the hover and text templates: those are the code's own markup (`<br>`), not data."""
    data = json.loads(spec if isinstance(spec, str) else spec.to_json())
    out: list[str] = []

    def walk(value):
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in ("hovertemplate", "texttemplate"):
                    walk(key)
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return out


def assert_no_markup(spec, *shown: str) -> None:
    strings = chart_strings(spec)
    tags = [s for s in strings if re.search(r"<(a|b|/a|/b|br)\b", s, re.I)]
    assert tags == []
    joined = "\n".join(strings)
    for text in shown:  # the names are there, escaped: Plotly shows them literally
        assert chart_label(text) in joined


# -- Plotly labels -------------------------------------------------------------------------------


def test_chart_label_escapes_html():
    assert chart_label(EVIL) == '&lt;a href="https://evil.example"&gt;x&lt;/a&gt;.jpg'
    assert chart_label("R&D <b>") == "R&amp;D &lt;b&gt;"
    assert chart_label("plain name.jpg") == "plain name.jpg"
    assert chart_label(12) == "12"


def test_zero_shot_figures_escape_names_and_labels():
    names = [EVIL, "ok.jpg"]
    labels = [BOLD, "a cat"]
    cosine = np.array([[0.2, 0.1], [0.3, 0.4]])
    heat = zeroshot_heatmap(cosine, labels, names)
    assert_no_markup(heat, "1. " + EVIL, BOLD)
    assert heat.data[0].type == "heatmap" and list(heat.data[0].z.shape) == [2, 2]
    assert_no_markup(label_bars(np.array([0.7, 0.3]), labels, "probability"), BOLD)
    over_time = labels_over_time([0.0, 1.0, 2.0], np.array([[0.1, 0.9]] * 3), labels)
    assert_no_markup(over_time, BOLD)
    assert [t.name for t in over_time.data] == [chart_label(BOLD), "a cat"]
    assert_no_markup(confusion_figure(np.array([[1, 0], [0, 1]]), labels), BOLD)


def test_frame_search_timeline_escapes_video_names():
    ranking = SimpleNamespace(
        ids=np.array([1, 2, 3, 4]),
        media_ids=np.array([7, 7, 8, 8]),
        timestamps=np.array([0.0, 1.0, 0.0, 1.0]),
        scores=np.array([0.1, 0.2, 0.3, 0.4]),
    )
    names = {7: EVIL.replace(".jpg", ".mp4"), 8: BOLD}
    fig = timeline_figure(ranking, names, {1: 1, 3: -1})
    assert_no_markup(fig, names[7], names[8])
    assert [t.name for t in fig.data[:2]] == [chart_label(names[7]), chart_label(names[8])]


# -- pages (AppTest) -------------------------------------------------------------------------------


@pytest.fixture
def app_home(tmp_path, monkeypatch):
    """A fresh data directory with the tiny profile; cached resources cleared so the app sees it."""
    require_media("images")
    home = tmp_path / "home"
    monkeypatch.setenv("FRAMESCOPE_HOME", str(home))
    monkeypatch.setenv("FRAMESCOPE_PROFILE", "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    yield home
    st.cache_resource.clear()


def test_zero_shot_page_heatmap_shows_an_html_file_name_as_text(app_home, media_root):
    at = AppTest.from_file(str(ROOT / "pages/2_Zero_Shot.py"), default_timeout=TIMEOUT).run()
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Images")
    photo = (media_root / "images" / "apple.jpg").read_bytes()
    uploader.set_value([(EVIL, photo, "image/jpeg"), ("b.jpg", photo, "image/jpeg")]).run()
    labels = next(t for t in at.text_area if t.label.startswith("Labels"))
    labels.input(f"{BOLD}, a cat")  # in the form: sent with Classify
    next(b for b in at.button if b.label == "Classify").click().run()
    assert not at.exception and not at.error
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # the heatmap and the per-image bars
    assert_no_markup(charts[0].proto.spec, "1. " + EVIL, BOLD)
    assert_no_markup(charts[1].proto.spec, BOLD)


def test_captions_page_refuses_a_long_prompt_with_a_message(app_home, media_root):
    at = AppTest.from_file(str(ROOT / "pages/3_Video_Captions.py"), default_timeout=TIMEOUT).run()
    video = (media_root / "video" / "realshort.mp4").read_bytes()
    at.file_uploader(key="captions-upload").set_value(("clip.mp4", video, "video/mp4")).run()
    next(t for t in at.text_input if t.label.startswith("Caption prompt")).input(
        "a picture of " * 200
    )  # in the form: sent with the button
    next(b for b in at.button if b.label == "Caption video").click().run()
    assert not at.exception
    message = at.error[0].value.replace("\\", "")
    assert re.search(r"the prompt is \d+ tokens; this captioning model takes at most \d+", message)
    # The video picker keeps an upload as soon as it is chosen (every video page shares it);
    # nothing was sampled or indexed from it.
    from core.library import Library

    assert Library(app_home).catalog.counts()["videos"] == 0


# -- terminal output --------------------------------------------------------------------------------


def test_printable_escapes_control_and_bidi_characters():
    assert printable("a\x1b[31mred\rb.jpg") == "a\\x1b[31mred\\rb.jpg"
    assert printable("two\nlines\ttab") == "two\\nlines\\ttab"
    assert printable("del\x7f c1\x9b nul\x00") == "del\\x7f c1\\x9b nul\\x00"
    assert printable("evil\u202egpj.exe \u2066x\u2069") == "evil\\u202egpj.exe \\u2066x\\u2069"
    assert printable("café 日本 – ok.jpg") == "café 日本 – ok.jpg"
    assert printable(Path("/tmp/a\nb")) == "/tmp/a\\nb"


def _no_controls(text: str) -> None:
    bad = re.findall("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text)
    assert bad == [], f"control characters reach the terminal: {bad!r} in {text!r}"


def test_cli_index_and_search_print_file_names_inert(tmp_path, media_root):
    if os.name == "nt":
        pytest.skip("control characters in file names")
    home, folder = tmp_path / "home", tmp_path / "photos"
    folder.mkdir()
    names = ["a\x1b[31mred\rb.jpg", "new\nline.jpg", "plain.jpg"]
    for name, source in zip(names, ["apple.jpg", "orange.jpg", "baboon.jpg"], strict=True):
        shutil.copyfile(media_root / "images" / source, folder / name)
    (folder / "bad\x1b]0;title\x07.jpg").write_text("not an image")  # listed as failed
    collection = "c\x1b[2J"

    index = run_cli(["index", folder, "--collection", collection], home)
    assert index.returncode == 0, index.stderr
    _no_controls(index.stdout)
    _no_controls(index.stderr)
    assert "c\\x1b[2J" in index.stdout and "bad\\x1b]0;title\\x07.jpg" in index.stdout
    assert len(index.stdout.splitlines()) == 2  # the summary and the one failure

    search = run_cli(["search", "a fruit", "--all", "-k", "10"], home)
    assert search.returncode == 0, search.stderr
    _no_controls(search.stdout)
    lines = search.stdout.splitlines()
    assert len(lines) == 3  # one line per hit: no name breaks or rewrites a line
    assert any("a\\x1b[31mred\\rb.jpg" in line for line in lines)
    assert any("new\\nline.jpg" in line for line in lines)
    assert all("c\\x1b[2J" in line for line in lines)

    status = run_cli(["status"], home)
    assert status.returncode == 0, status.stderr
    _no_controls(status.stdout)
    assert "bad\\x1b]0;title\\x07.jpg" in status.stdout

    missing = run_cli(["caption", folder / "gone\x1b[31m.mp4"], home)
    assert missing.returncode == 1
    _no_controls(missing.stderr)
    assert "gone\\x1b[31m.mp4: no such file" in missing.stderr
