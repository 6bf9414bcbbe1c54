"""The app's pages driven by Streamlit's AppTest: home and image search, with a real library."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import Settings
from core.indexing import Indexer
from core.library import Library
from core.models.clip import load_clip

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "media" / "images"
TIMEOUT = 180


def _run(script: str) -> AppTest:
    return AppTest.from_file(str(ROOT / script), default_timeout=TIMEOUT).run()


@pytest.fixture
def app_home(tmp_path, monkeypatch):
    """A fresh data directory with the tiny profile; cached resources cleared so the app sees it."""
    if not IMAGES.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared media missing at {IMAGES}")
        pytest.skip(f"shared media missing at {IMAGES}")
    home = tmp_path / "home"
    monkeypatch.setenv("FRAMESCOPE_HOME", str(home))
    monkeypatch.setenv("FRAMESCOPE_PROFILE", "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    yield home
    st.cache_resource.clear()


def _index(home: Path, folder: Path, collection: str = "photos"):
    settings = Settings.from_env(home=home, profile="tiny")
    return Indexer(Library(home), load_clip(settings), settings).index([folder], collection)


def _folder_with_bad_files(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("apple.jpg", "orange.jpg", "baboon.jpg", "dashcam_solidWhiteRight.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    (folder / "notes.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    return folder


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += (
        [e.value for e in at.error]
        + [w.value for w in at.warning]
        + [i.value for i in at.info]
        + [s.value for s in at.success]
    )
    return "\n".join(str(p) for p in parts).replace("\\", "")  # drop Markdown escapes


def test_home_empty_library(app_home):
    at = _run("app.py")
    assert not at.exception
    assert at.title[0].value == "Framescope"
    assert "random weights" in at.warning[0].value
    assert "library is empty" in _texts(at)
    assert [m.value for m in at.metric] == ["0", "0", "0", "0"]


def test_home_shows_collections_models_and_failed_files(app_home, tmp_path):
    _index(app_home, _folder_with_bad_files(tmp_path))
    at = _run("app.py")
    assert not at.exception
    assert [m.value for m in at.metric] == ["1", "4", "0", "2"]
    frames = [d.value for d in at.dataframe]
    collections = next(f for f in frames if "collection" in f.columns and "images" in f.columns)
    assert collections.iloc[0]["collection"] == "photos" and collections.iloc[0]["images"] == 4
    failed = next(f for f in frames if "reason" in f.columns)
    reasons = dict(zip(failed["file"], failed["reason"], strict=True))
    assert "empty file" in reasons["empty.png"]
    assert "not a readable image" in reasons["notes.jpg"]
    models = next(f for f in frames if "weights" in f.columns)
    assert models.iloc[0]["weights"] == "random (tiny profile)"
    assert str(app_home) in _texts(at)


def test_home_without_weights_shows_ways_out(app_home, monkeypatch):
    monkeypatch.setenv("FRAMESCOPE_PROFILE", "default")
    monkeypatch.setenv("FRAMESCOPE_CLIP_PRETRAINED", str(app_home / "missing-weights.pt"))
    at = _run("app.py")
    assert not at.exception
    message = at.error[0].value
    assert "does not exist" in message and "tiny" in message and "connect" in message


def test_search_page_text_query_and_more_like_this(app_home):
    _index(app_home, IMAGES)
    at = _run("pages/1_Image_Search.py")
    assert not at.exception
    search_box = next(t for t in at.text_input if t.label == "Search for")
    search_box.input("a red apple")
    at.toggle(key="show_all").set_value(True)
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and not at.error
    assert any("hits for “a red apple”" in c.value for c in at.caption)
    like_buttons = [b for b in at.button if b.label == "More like this"]
    assert len(like_buttons) >= 4
    like_buttons[3].click().run()
    assert not at.exception
    assert any("hits for “example image”" in c.value for c in at.caption)
    first_hit = next(m.value for m in at.markdown if m.value.startswith("**"))
    assert first_hit.startswith("**1.000**")


def test_search_page_empty_query_and_empty_library(app_home):
    at = _run("pages/1_Image_Search.py")
    assert "no images yet" in _texts(at)
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception
    assert "library is empty" in at.error[0].value

    _index(app_home, IMAGES)
    at = _run("pages/1_Image_Search.py")
    next(b for b in at.button if b.label == "Search").click().run()
    assert "empty query" in at.error[0].value


def test_search_page_uploads_good_and_bad_files(app_home):
    at = _run("pages/1_Image_Search.py")
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Upload images")
    uploader.set_value(
        [
            ("apple.jpg", (IMAGES / "apple.jpg").read_bytes(), "image/jpeg"),
            ("fish.jpg", (IMAGES / "HappyFish.jpg").read_bytes(), "image/jpeg"),
            ("fake.jpg", b"this is text", "image/jpeg"),
        ]
    )
    at.run()
    next(b for b in at.button if b.label == "Add uploaded images").click().run()
    assert not at.exception
    assert not any(b.label == "Stop" for b in at.button)  # the job is over: no Stop button left
    assert not at.get("progress")  # the finished bar goes; the report below says what happened
    assert any("2 added" in w.value and "1 failed" in w.value for w in at.warning)
    failed = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert list(failed["file"]) == ["fake.jpg"]
    assert "not a readable image" in failed["reason"].iloc[0]
    library = Library(app_home)
    assert library.catalog.counts()["images"] == 2
    stored = {r.name for r in library.catalog.media(status="ok")}
    assert stored == {"apple.jpg", "fish.jpg"}


def test_search_page_example_image_query(app_home):
    _index(app_home, IMAGES)
    at = _run("pages/1_Image_Search.py")
    example = next(u for u in at.get("file_uploader") if u.proto.label == "…or by an example image")
    example.set_value(
        ("query.jpg", (IMAGES / "butterfly.jpg").read_bytes(), "image/jpeg")
    )  # in a form: sent on submit
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and not at.error
    first_hit = next(m.value for m in at.markdown if m.value.startswith("**"))
    assert "butterfly" in first_hit and first_hit.startswith("**1.000**")


def test_search_page_folder_errors(app_home, tmp_path, monkeypatch):
    at = _run("pages/1_Image_Search.py")
    folder_box = next(t for t in at.text_input if t.label.startswith("Folder on this computer"))
    folder_box.input(str(tmp_path / "no-such-folder")).run()
    next(b for b in at.button if b.label == "Index folder").click().run()
    assert not at.exception
    assert "no such file or folder" in at.error[0].value


def test_search_page_shared_mode_refuses_other_folders(app_home, tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("FRAMESCOPE_MODE", "shared")
    monkeypatch.setenv("FRAMESCOPE_ROOTS", str(allowed))
    monkeypatch.setattr("ui.resources.request_headers", lambda: {"X-Forwarded-User": "alice"})
    st.cache_resource.clear()
    at = _run("pages/1_Image_Search.py")
    assert not any(t.label.startswith("Folder on this computer") for t in at.text_input)
    sub = next(t for t in at.text_input if t.label.startswith("Sub-folder"))
    sub.input("../../etc").run()
    next(b for b in at.button if b.label == "Index folder").click().run()
    assert not at.exception
    assert "only indexes folders under FRAMESCOPE_ROOTS" in at.error[0].value.replace("\\", "")


def _index_video(home: Path, video: Path):
    from core.types import Sampling

    settings = Settings.from_env(home=home, profile="tiny")
    sampling = Sampling(every=1.0, dedup=1.0)
    return Indexer(Library(home), load_clip(settings), settings).index(
        [video], "clips", sampling=sampling
    )


def test_frame_search_page_search_mark_refine_undo(app_home):
    video = IMAGES.parent / "video" / "dashcam_highway.mp4"
    _index_video(app_home, video)
    at = _run("pages/6_Frame_Search.py")
    assert not at.exception
    at.toggle(key="fs-group").set_value(False)
    next(t for t in at.text_input if t.label == "Search for").input("cars ahead on a highway")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and not at.error
    assert any("moments for “cars ahead on a highway”" in c.value for c in at.caption)
    first = [m.value for m in at.markdown if m.value.startswith("**")]
    assert len(first) >= 4 and all("dashcam_highway.mp4" in m.replace("\\", "") for m in first)
    ups = [b for b in at.button if b.proto.help == "mark relevant"]
    ups[-1].click().run()
    ups = [b for b in at.button if b.proto.help == "mark relevant"]
    ups[-2].click().run()
    assert any("2 marked relevant" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Refine").click().run()
    assert not at.exception and not at.error
    assert any("feedback round 1" in c.value for c in at.caption)
    after = [m.value for m in at.markdown if m.value.startswith("**")]
    assert after != first
    assert len(at.get("plotly_chart")) >= 1
    next(b for b in at.button if b.label == "Undo").click().run()
    assert not any("feedback round" in c.value for c in at.caption)
    labels = [d for d in at.get("download_button") if "labels" in str(d.proto.label).lower()]
    assert labels


def test_frame_search_page_plays_a_hit(app_home):
    _index_video(app_home, IMAGES.parent / "video" / "vtest.avi")
    at = _run("pages/6_Frame_Search.py")
    next(t for t in at.text_input if t.label == "Search for").input("people walking")
    next(b for b in at.button if b.label == "Search").click().run()
    next(b for b in at.button if b.label == "Play").click().run()
    assert not at.exception and not at.error
    videos = at.get("video")
    assert len(videos) == 1
    assert videos[0].proto.start_time >= 0
    playback = list((app_home / "playback").glob("*.mp4"))
    assert len(playback) == 1  # vtest.avi (MPEG-4 part 2) was transcoded for the browser


def test_captions_page_upload_caption_and_save(app_home):
    at = _run("pages/3_Video_Captions.py")
    assert not at.exception
    at.radio[0].set_value("Upload a video").run()
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Video file")
    uploader.set_value(
        ("clip.mp4", (IMAGES.parent / "video" / "realshort.mp4").read_bytes(), "video/mp4")
    )
    at.run()
    next(n for n in at.number_input if n.label == "Seconds between frames").set_value(0.5)
    next(b for b in at.button if b.label == "Caption video").click().run()
    assert not at.exception and not at.error
    assert not any(b.label == "Stop" for b in at.button)
    assert any("clip.mp4 · 3 frames" in c.value.replace("\\", "") for c in at.caption)
    segments = next(d.value for d in at.dataframe if "caption" in d.value.columns)
    assert segments["from"].iloc[0] == "0:00.0"
    next(b for b in at.button if b.label == "Write a paragraph with the text model").click().run()
    assert not at.exception and not at.error
    assert any(
        m.value and not m.value.startswith("**") for m in at.markdown
    )  # the LLM's paragraph, as text
    next(b for b in at.button if b.label == "Save results folder").click().run()
    assert not at.exception
    (folder,) = list((app_home / "exports" / "captions").iterdir())
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "captions.json",
        "captions.srt",
        "captions.vtt",
        "frame_01.jpg",
        "frame_01.txt",
        "frame_02.jpg",
        "frame_02.txt",
        "frame_03.jpg",
        "frame_03.txt",
    ]
    assert any(d.proto.label == "Download as zip" for d in at.get("download_button"))


def test_captions_page_bad_video(app_home):
    at = _run("pages/3_Video_Captions.py")
    at.radio[0].set_value("Upload a video").run()
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Video file")
    uploader.set_value(("fake.mp4", b"this is not a video", "video/mp4"))
    at.run()
    next(b for b in at.button if b.label == "Caption video").click().run()
    assert not at.exception
    assert "fake.mp4" in at.error[0].value.replace("\\", "")
    assert Library(app_home).catalog.counts()["videos"] == 0


def test_qa_page_two_questions_with_frames(app_home, monkeypatch):
    monkeypatch.setenv("FRAMESCOPE_VLM_MAX_TOKENS", "8")
    st.cache_resource.clear()
    _index_video(app_home, IMAGES.parent / "video" / "vtest.avi")
    at = _run("pages/4_Video_QA.py")
    assert not at.exception and not at.error
    at.chat_input[0].set_value("What is happening?").run()
    assert not at.exception and not at.error
    at.chat_input[0].set_value("Are pedestrians visible?").run()
    assert not at.exception and not at.error
    users = [m for m in at.get("chat_message") if m.proto.name == "user"]
    assistants = [m for m in at.get("chat_message") if m.proto.name == "assistant"]
    assert len(users) == 2 and len(assistants) == 2
    assert "Frames used (8)" in [e.proto.label for e in at.expander]
    seek = [b for b in at.button if b.proto.icon == ":material/play_arrow:"]
    assert len(seek) == 16
    seek[3].click().run()
    assert at.get("video")[0].proto.start_time > 0


def test_qa_page_empty_question_and_bad_video(app_home):
    at = _run("pages/4_Video_QA.py")
    at.radio[0].set_value("An uploaded video").run()
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Video file")
    uploader.set_value(("broken.mp4", b"not a video at all", "video/mp4")).run()
    assert not at.exception
    assert "broken.mp4" in at.error[0].value.replace("\\", "")


def test_home_never_shows_the_endpoint_key(app_home, monkeypatch):
    monkeypatch.setenv("FRAMESCOPE_VLM_API_KEY", "sk-secret-123")
    at = _run("app.py")
    settings_table = next(d.value for d in at.dataframe if "variable" in d.value.columns)
    row = settings_table[settings_table["variable"] == "FRAMESCOPE_VLM_API_KEY"].iloc[0]
    assert row["value"] == "(set, hidden)"
    assert "sk-secret-123" not in settings_table.to_string()


def test_zero_shot_page_preset_heatmap_and_map(app_home):
    at = _run("pages/2_Zero_Shot.py")
    assert not at.exception
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Images")
    uploader.set_value(
        [
            ("road1.jpg", (IMAGES / "dashcam_solidWhiteRight.jpg").read_bytes(), "image/jpeg"),
            ("road2.jpg", (IMAGES / "dashcam_whiteCarLaneSwitch.jpg").read_bytes(), "image/jpeg"),
            ("broken.jpg", b"not an image", "image/jpeg"),
        ]
    ).run()
    at.selectbox[0].set_value("road scene").run()
    next(b for b in at.button if b.label == "Classify").click().run()
    assert not at.exception and not at.error
    assert any("broken.jpg" in w.value.replace("\\", "") for w in at.warning)
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # the image x label heatmap and the per-image bars
    heat = json.loads(charts[0].proto.spec)["data"][0]
    assert (
        heat["type"] == "heatmap" and heat["z"]["shape"] == "2, 12"
    )  # 2 images x the 12 road labels
    table = next(d.value for d in at.dataframe if "cosine" in d.value.columns)
    assert abs(table.iloc[:, 1].sum() - 1.0) < 1e-3  # probabilities over the labels
    next(s for s in at.selectbox if s.label == "Method").set_value("occlusion").run()
    assert not at.exception and not at.error


def test_zero_shot_page_one_label_says_why(app_home):
    at = _run("pages/2_Zero_Shot.py")
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Images")
    uploader.set_value(("a.jpg", (IMAGES / "apple.jpg").read_bytes(), "image/jpeg")).run()
    next(t for t in at.text_area if t.label.startswith("Labels")).input("apple").run()
    next(b for b in at.button if b.label == "Classify").click().run()
    assert "multi-label" in at.error[0].value.replace("\\", "")


def test_summary_page_upload_chapters_and_exports(app_home):
    at = _run("pages/5_Video_Summary.py")
    assert not at.exception and not at.error
    at.radio[0].set_value("Upload a file").run()
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Video file")
    evil = "[click](http://evil.example) ![x](http://evil.example/a.png).mp4"
    uploader.set_value(
        (evil, (IMAGES.parent / "video" / "box.mp4").read_bytes(), "video/mp4")
    ).run()
    next(n for n in at.number_input if n.label == "Seconds per chunk").set_value(8.0)
    next(n for n in at.number_input if n.label == "Frames per chunk").set_value(1)
    next(b for b in at.button if b.label == "Summarize").click().run()
    assert not at.exception and not at.error
    assert not any(b.label == "Stop" for b in at.button)
    assert (
        at.text[0].value == "[click](http://evil.example) ![x](http://evil.example/a.png)"
    )  # shown as text
    assert all("](http" not in m.value for m in at.markdown)
    chapters = [b for b in at.button if b.proto.icon == ":material/play_arrow:"]
    assert chapters and chapters[0].label.startswith("0:00.0-")
    chapters[-1].click().run()
    assert at.get("video")[0].proto.start_time >= 0
    labels = {d.proto.label for d in at.get("download_button")}
    assert labels == {"Markdown", "JSON", "Chunks CSV"}
    assert len(Library(app_home).annotations.summaries()) == 1
