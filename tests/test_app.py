"""The app's pages driven by Streamlit's AppTest: home and image search, with a real library."""

from __future__ import annotations

import json
import os
import re
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
    models = at.table[0].value
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
    fourth = [m.value for m in at.markdown if m.value.startswith("**")][3].replace("\\", "")
    like_buttons[3].click().run()
    assert not at.exception
    # What was searched, truly: that hit's image (the text box still holds "a red apple").
    name = fourth.split(" · ")[1]
    assert f"hits like {name} (More like this)" in _texts(at)
    assert "a red apple" not in " ".join(c.value for c in at.caption)
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
    folder_box.input(str(tmp_path / "no-such-folder"))  # in a form: sent with its button
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
    sub.input("../../etc")
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
    # In the player dialog, in front of the page, playing (muted, so the browser lets it start).
    assert videos[0].proto.autoplay and videos[0].proto.muted
    dialogs = [b.proto.dialog for b in _blocks(at) if getattr(b, "type", None) == "dialog"]
    assert [d for d in dialogs if d.title.replace("\\", "").startswith("vtest.avi · clips")]
    playback = list((app_home / "playback").glob("*.mp4"))
    assert len(playback) == 1  # vtest.avi (MPEG-4 part 2) was transcoded for the browser


VIDEOS = IMAGES.parent / "video"


def _upload_video(at: AppTest, key: str, name: str, data: bytes) -> AppTest:
    """Choose a video through the shared picker's Upload (the default source)."""
    return at.file_uploader(key=f"{key}-upload").set_value((name, data, "video/mp4")).run()


def _click(at: AppTest, label: str) -> AppTest:
    return next(b for b in at.button if b.label == label).click().run()


def _blocks(at: AppTest) -> list:
    """Every block (container, dialog, tab...) of the page, depth first."""
    found, todo = [], [at._tree]
    while todo:
        node = todo.pop()
        children = getattr(node, "children", {})
        for child in children.values():
            if hasattr(child, "children"):
                found.append(child)
                todo.append(child)
    return found


def test_captions_page_upload_caption_and_save(app_home):
    at = _run("pages/3_Video_Captions.py")
    assert not at.exception
    assert at.button_group(key="captions-source").value == "Upload"  # the shared picker
    _upload_video(at, "captions", "clip.mp4", (VIDEOS / "realshort.mp4").read_bytes())
    next(n for n in at.number_input if n.label == "Seconds between frames").set_value(0.5)
    _click(at, "Caption video")
    assert not at.exception and not at.error
    assert not any(b.label == "Stop" for b in at.button)
    assert not at.get("progress")
    assert any("clip.mp4 · 3 frames" in c.value.replace("\\", "") for c in at.caption)
    segments = next(d.value for d in at.dataframe if "caption" in d.value.columns)
    assert segments["from"].iloc[0] == "0:00.0"
    _click(at, "Write a paragraph with the text model")
    assert not at.exception and not at.error
    assert any(
        m.value and not m.value.startswith("**") for m in at.markdown
    )  # the LLM's paragraph, as text
    _click(at, "Save results folder")
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
    _upload_video(at, "captions", "fake.mp4", b"this is not a video")
    _click(at, "Caption video")
    assert not at.exception
    assert "fake.mp4" in at.error[0].value.replace("\\", "")
    assert Library(app_home).catalog.counts()["videos"] == 0


def test_captions_page_library_video(app_home):
    _index_video(app_home, VIDEOS / "realshort.mp4")
    at = _run("pages/3_Video_Captions.py")
    at.button_group(key="captions-source").set_value("Library").run()
    assert "realshort.mp4 · clips" in at.selectbox(key="captions-library").format_func(
        at.selectbox(key="captions-library").value
    )
    _click(at, "Caption video")
    assert not at.exception and not at.error
    assert any("realshort.mp4 · " in c.value.replace("\\", "") for c in at.caption)
    assert Library(app_home).catalog.counts()["videos"] == 1  # captioned where it is


def test_captions_page_results_belong_to_their_video(app_home):
    """An error about a new file replaces the old video's results (no stale captions, no bar);
    the error names the file as uploaded, never the stored path."""
    at = _run("pages/3_Video_Captions.py")
    _upload_video(at, "captions", "good clip.mp4", (VIDEOS / "realshort.mp4").read_bytes())
    _click(at, "Caption video")
    assert [s.value for s in at.subheader][:1] == ["Caption"]
    _upload_video(at, "captions", "notes.mp4", b"shopping list: milk, eggs\n" * 20)
    assert not at.subheader  # the results were made for the other video
    _click(at, "Caption video")
    assert not at.exception
    (error,) = [e.value.replace("\\", "") for e in at.error]
    assert error.startswith("notes.mp4: not a video") or error.startswith("notes.mp4: not a")
    assert "uploads/" not in error and str(app_home) not in error
    assert not at.subheader and not at.get("progress") and not at.get("image")
    _upload_video(at, "captions", "good clip.mp4", (VIDEOS / "realshort.mp4").read_bytes())
    assert not at.subheader  # the error dropped them: captioning again is needed
    _click(at, "Caption video")
    assert not at.error and "Caption" in [s.value for s in at.subheader]
    assert any("good clip.mp4 · " in c.value.replace("\\", "") for c in at.caption)


def _dialog_videos(at: AppTest) -> list:
    return list(at.get("video"))


def test_qa_page_two_questions_with_frames(app_home, monkeypatch):
    monkeypatch.setenv("FRAMESCOPE_VLM_MAX_TOKENS", "8")
    st.cache_resource.clear()
    _index_video(app_home, VIDEOS / "vtest.avi")
    at = _run("pages/4_Video_QA.py")
    at.button_group(key="qa-source").set_value("Library").run()
    assert not at.exception and not at.error
    assert not at.get("video")  # no player far down the page: frames play in a dialog
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
    (video,) = at.get("video")  # the player, in a dialog, from that frame, playing
    assert video.proto.start_time > 0
    assert video.proto.autoplay and video.proto.muted


def test_qa_page_bad_video_is_named_as_uploaded(app_home):
    at = _run("pages/4_Video_QA.py")
    _upload_video(at, "qa", "broken.mp4", b"not a video at all")
    assert not at.exception
    (error,) = [e.value.replace("\\", "") for e in at.error]
    assert error.startswith("broken.mp4: not a supported video")
    assert "uploads/" not in error and str(app_home) not in error
    assert at.chat_input[0].proto.disabled


def test_qa_page_one_bad_image_among_good_ones(app_home, monkeypatch):
    monkeypatch.setenv("FRAMESCOPE_VLM_MAX_TOKENS", "4")
    st.cache_resource.clear()
    at = _run("pages/4_Video_QA.py")
    at.radio(key="qa-about").set_value("Images").run()
    at.file_uploader(key="qa-images").set_value(
        [
            ("apple.jpg", (IMAGES / "apple.jpg").read_bytes(), "image/jpeg"),
            ("notes.jpg", b"shopping list", "image/jpeg"),
            ("orange.jpg", (IMAGES / "orange.jpg").read_bytes(), "image/jpeg"),
        ]
    ).run()
    assert not at.exception and not at.error
    warnings = [w.value.replace("\\", "") for w in at.warning]
    (warning,) = [w for w in warnings if "notes.jpg" in w]
    assert "Skipped notes.jpg" in warning and "not a readable image" in warning
    assert not at.chat_input[0].proto.disabled  # the chat goes on with the two good images
    at.chat_input[0].set_value("What fruit is this?").run()
    assert not at.exception and not at.error
    assert "Frames used (2)" in [e.proto.label for e in at.expander]


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
    _labels(at, "apple")  # in the form: sent with Classify
    next(b for b in at.button if b.label == "Classify").click().run()
    assert "multi-label" in at.error[0].value.replace("\\", "")


def _labels(at: AppTest, text: str) -> None:
    next(t for t in at.text_area if t.label.startswith("Labels")).input(text)


def test_zero_shot_page_video_timeline(app_home):
    """Video frames: the probability of each label over the video (it crashed on a widget key)."""
    at = _run("pages/2_Zero_Shot.py")
    at.radio[0].set_value("Video frames").run()
    assert at.button_group(key="zs-video-source").value == "Upload"  # the shared picker
    _upload_video(at, "zs-video", "clip.mp4", (VIDEOS / "realshort.mp4").read_bytes())
    _labels(at, "a car, a tree, a person")
    _click(at, "Classify")
    assert not at.exception and not at.error
    (chart,) = at.get("plotly_chart")
    lines = json.loads(chart.proto.spec)["data"]
    assert [line["name"] for line in lines] == ["a car", "a tree", "a person"]
    assert any(d.proto.label == "Export CSV" for d in at.get("download_button"))


def test_zero_shot_page_bad_video_then_good(app_home):
    at = _run("pages/2_Zero_Shot.py")
    at.radio[0].set_value("Video frames").run()
    _upload_video(at, "zs-video", "clip.mp4", (VIDEOS / "realshort.mp4").read_bytes())
    _labels(at, "a car, a tree")
    _click(at, "Classify")
    assert len(at.get("plotly_chart")) == 1
    _upload_video(at, "zs-video", "notes.mp4", b"shopping list: milk, eggs\n" * 20)
    assert not at.get("plotly_chart")  # made for the other video
    _click(at, "Classify")
    assert not at.exception
    (error,) = [e.value.replace("\\", "") for e in at.error]
    assert error.startswith("notes.mp4: not a supported video")
    assert "uploads/" not in error and str(app_home) not in error
    assert not at.get("plotly_chart") and not at.get("download_button")


def test_zero_shot_page_new_images_hide_old_results(app_home):
    at = _run("pages/2_Zero_Shot.py")
    uploader = at.file_uploader(key="zs-images")
    uploader.set_value(("a.jpg", (IMAGES / "apple.jpg").read_bytes(), "image/jpeg")).run()
    _labels(at, "apple, orange")
    _click(at, "Classify")
    assert len(at.get("plotly_chart")) == 2
    at.file_uploader(key="zs-images").set_value(("bad.jpg", b"no", "image/jpeg")).run()
    assert not at.get("plotly_chart")
    _click(at, "Classify")
    assert "bad.jpg" in at.error[0].value.replace("\\", "") and not at.get("plotly_chart")


def _spy_progress(monkeypatch) -> list[str]:
    """The texts every progress bar showed, in order."""
    from streamlit.delta_generator import DeltaGenerator

    texts: list[str] = []
    real = DeltaGenerator.progress

    def spy(self, value, text=None, **kwargs):
        texts.append(text or "")
        return real(self, value, text=text, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "progress", spy)
    return texts


def test_summary_page_upload_chapters_and_exports(app_home, monkeypatch):
    texts = _spy_progress(monkeypatch)
    at = _run("pages/5_Video_Summary.py")
    assert not at.exception and not at.error
    assert at.button_group(key="summary-source").options == ["Upload", "Library", "Web link"]
    evil = "[click](http://evil.example) ![x](http://evil.example/a.png).mp4"
    _upload_video(at, "summary", evil, (VIDEOS / "box.mp4").read_bytes())
    next(n for n in at.number_input if n.label == "Seconds per chunk").set_value(8.0)
    next(n for n in at.number_input if n.label == "Frames per chunk").set_value(1)
    _click(at, "Summarize")
    assert not at.exception and not at.error
    assert not any(b.label == "Stop" for b in at.button)
    assert not at.get("progress")  # one bar while it ran, gone when done
    counts = [c for t in texts for c in re.findall(r"\d+(?:\.\d+)?/\d+(?:\.\d+)?", t)]
    assert counts and all(re.fullmatch(r"\d+/\d+", c) for c in counts)  # 3/5, never 3.0/5
    assert (
        at.text[0].value == "[click](http://evil.example) ![x](http://evil.example/a.png)"
    )  # shown as text
    assert all("](http" not in m.value for m in at.markdown)
    assert not at.get("video")  # no player far below: chapters play in a dialog
    chapters = [b for b in at.button if b.proto.icon == ":material/play_arrow:"]
    assert chapters and chapters[0].label.startswith("0:00.0-")
    chapters[-1].click().run()
    (video,) = at.get("video")
    minutes, seconds = chapters[-1].label.split("-")[0].split(":")
    assert video.proto.start_time == int(int(minutes) * 60 + float(seconds))
    assert video.proto.autoplay and video.proto.muted
    labels = {d.proto.label for d in at.get("download_button")}
    assert labels == {"Markdown", "JSON", "Chunks CSV"}
    assert len(Library(app_home).annotations.summaries()) == 1


def test_summary_page_library_video_and_errors(app_home, monkeypatch):
    """A library video can be summarized; a bad upload's error replaces its summary."""
    _index_video(app_home, VIDEOS / "realshort.mp4")
    at = _run("pages/5_Video_Summary.py")
    at.button_group(key="summary-source").set_value("Library").run()
    next(n for n in at.number_input if n.label == "Frames per chunk").set_value(1)
    _click(at, "Summarize")
    assert not at.exception and not at.error
    assert at.text[0].value == "realshort"
    assert "Chapters" in [s.value for s in at.subheader]
    at.button_group(key="summary-source").set_value("Upload").run()
    assert not at.subheader  # the summary was made for the library video
    _upload_video(at, "summary", "notes.mp4", b"shopping list: milk, eggs\n" * 20)
    _click(at, "Summarize")
    (error,) = [e.value.replace("\\", "") for e in at.error]
    assert error.startswith("notes.mp4: not a supported video")
    assert "uploads/" not in error and str(app_home) not in error
    assert not at.subheader and not at.get("progress")
    at.button_group(key="summary-source").set_value("Library").run()
    assert not at.subheader  # the error replaced the summary: it is not brought back


# -- Home, Image search and Frame search as people use them ----------------------------------------

VIDEOS = IMAGES.parent / "video"


def _fake_openai_server():
    """An OpenAI-compatible server on 127.0.0.1 that lists one model (GET /v1/models)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": "fake-model"}]}).encode()
            self.send_response(200 if self.path.endswith("/models") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_home_lists_the_four_roles_with_their_state(app_home, monkeypatch):
    import socket

    from ui import resources

    server = _fake_openai_server()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    try:
        monkeypatch.setenv("FRAMESCOPE_LLM_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv("FRAMESCOPE_LLM_API_KEY", "sk-secret-456")
        monkeypatch.setenv("FRAMESCOPE_VLM_BASE_URL", f"http://127.0.0.1:{dead}/v1")
        monkeypatch.setattr(resources, "_LOADED", {})
        st.cache_resource.clear()
        st.cache_data.clear()
        resources.get_captioner()  # the captioner was used (on Video captions)
        at = _run("app.py")
        assert not at.exception
        models = at.table[0].value
        state = dict(zip(models.index, models["state"], strict=True))
        weights = dict(zip(models.index, models["weights"], strict=True))
        assert list(state) == [
            "image-text embeddings (CLIP)",
            "captioner (BLIP)",
            "vision-language model",
            "text model",
        ]
        assert state["image-text embeddings (CLIP)"] == "loaded"
        assert state["captioner (BLIP)"] == "loaded"
        assert state["text model"] == "not loaded · endpoint reachable"
        assert state["vision-language model"] == (
            "not loaded · endpoint not reachable (connection refused)"
        )
        assert weights["text model"] == "endpoint" and weights["captioner (BLIP)"].startswith(
            "random"
        )
        assert all(models["device"])
        shown = models.to_string() + _texts(at)
        assert "sk-secret-456" not in shown
    finally:
        server.shutdown()
        server.server_close()
        st.cache_data.clear()


def test_image_search_indexes_a_folder_images_only_and_enter_submits(app_home, tmp_path):
    folder = tmp_path / "trip"
    folder.mkdir()
    for name in ("apple.jpg", "orange.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    (folder / "clip.mp4").write_bytes((VIDEOS / "realshort.mp4").read_bytes())
    at = _run("pages/1_Image_Search.py")
    box = next(t for t in at.text_input if t.label.startswith("Folder on this computer"))
    assert box.form_id  # in a form: Enter in the box submits it
    box.input(str(folder))
    next(b for b in at.button if b.label == "Index folder").click().run()
    assert not at.exception and not at.error
    texts = _texts(at)
    assert "2 added" in texts and "1 video left for Frame search" in texts
    assert "Frame search" in " ".join(i.value for i in at.info)
    library = Library(app_home)
    assert library.catalog.counts()["videos"] == 0 and library.catalog.counts()["images"] == 2
    # Searchable at once: the Search tab lists the new collection in the same run.
    assert next(m for m in at.multiselect if m.label == "Collections").options == ["default"]
    next(t for t in at.text_input if t.label == "Search for").input("fruit")
    at.toggle(key="show_all").set_value(True)
    next(b for b in at.button if b.label == "Search").click().run()
    hits = [m.value for m in at.markdown if m.value.startswith("**")]
    assert len(hits) == 2 and not any("frame at" in h for h in hits)


def test_image_search_one_hit_for_an_uploaded_copy(app_home, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("apple.jpg", "orange.jpg", "baboon.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    _index(app_home, folder, "photos")
    at = _run("pages/1_Image_Search.py")
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Upload images")
    uploader.set_value([("my-apple.jpg", (IMAGES / "apple.jpg").read_bytes(), "image/jpeg")])
    at.run()
    next(b for b in at.button if b.label == "Add uploaded images").click().run()
    assert not at.exception
    example = next(u for u in at.get("file_uploader") if u.proto.label == "…or by an example image")
    example.set_value(("query.jpg", (IMAGES / "apple.jpg").read_bytes(), "image/jpeg"))
    next(t for t in at.text_input if t.label == "Search for").input("fruit")
    at.toggle(key="show_all").set_value(True)
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and not at.error
    hits = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith("**")]
    assert len(hits) == 3  # apple once, though it is in the library twice
    copies = [c.value.replace("\\", "") for c in at.caption if "copies:" in c.value]
    assert len(copies) == 1 and str(folder / "apple.jpg") in copies[0]
    assert "my-apple.jpg" in copies[0]
    texts = _texts(at)
    assert "3 hits for “fruit” and the image query.jpg" in texts  # what was searched, truly
    csv_button = next(d for d in at.get("download_button") if d.proto.label == "Export CSV")
    assert csv_button  # the export's content is checked in test_search and the browser tests


def test_image_search_lists_collections_that_hold_only_videos(app_home, tmp_path):
    _index(app_home, _folder_with_bad_files(tmp_path), "photos")
    _index_video(app_home, VIDEOS / "realshort.mp4")  # collection "clips": videos only
    at = _run("pages/1_Image_Search.py")
    scope = next(m for m in at.multiselect if m.label == "Collections")
    assert set(scope.options) == {"photos", "clips"} and set(scope.value) == {"photos", "clips"}


def _upload_videos(at: AppTest, *files: tuple[str, bytes], collection: str | None = None):
    if collection is not None:
        at.text_input(key="video-collection").input(collection)
    uploader = next(u for u in at.get("file_uploader") if u.proto.label == "Upload videos")
    uploader.set_value([(name, data, "video/mp4") for name, data in files]).run()
    next(b for b in at.button if b.label == "Add uploaded videos").click().run()
    assert not at.exception


def test_frame_search_covers_videos_added_in_the_same_visit(app_home):
    _index_video(app_home, VIDEOS / "realshort.mp4")
    at = _run("pages/6_Frame_Search.py")
    assert len(at.multiselect(key="fs-videos").value) == 1
    _upload_videos(at, ("box.mp4", (VIDEOS / "box.mp4").read_bytes()))
    next(t for t in at.text_input if t.label == "Search for").input("a box")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and not at.error
    assert len(at.multiselect(key="fs-videos").value) == 2  # the new video is in the filter
    caption = next(c.value for c in at.caption if "moments for" in c.value).replace("\\", "")
    assert "in 2 videos" in caption, caption
    # A video taken out of the filter stays out when another one arrives.
    ids = {v.name: v.id for v in Library(app_home).catalog.videos()}
    assert set(at.multiselect(key="fs-videos").value) == {ids["realshort.mp4"], ids["box.mp4"]}
    at.multiselect(key="fs-videos").set_value([ids["box.mp4"]]).run()
    _index_video(app_home, VIDEOS / "dashcam_highway.mp4")  # e.g. added by the CLI meanwhile
    at.run()
    ids = {v.name: v.id for v in Library(app_home).catalog.videos()}
    assert len(at.multiselect(key="fs-videos").options) == 3
    assert set(at.multiselect(key="fs-videos").value) == {
        ids["box.mp4"],
        ids["dashcam_highway.mp4"],
    }


def test_frame_search_tells_same_named_videos_apart(app_home, tmp_path):
    at = _run("pages/6_Frame_Search.py")
    data = (VIDEOS / "realshort.mp4").read_bytes()
    _upload_videos(at, ("box.mp4", data), collection="holiday")
    _upload_videos(at, ("box.mp4", data), collection="work")
    at.run()
    options = at.multiselect(key="fs-videos").options
    assert len(options) == 2 and len(set(options)) == 2
    assert any("box.mp4 · holiday" in o for o in options)
    assert any("box.mp4 · work" in o for o in options)


def test_frame_search_counts_videos_and_images_apart(app_home):
    _index(app_home, _folder_with_bad_files(app_home.parent), "photos")
    _index_video(app_home, VIDEOS / "realshort.mp4")
    at = _run("pages/6_Frame_Search.py")
    at.toggle(key="fs-images").set_value(True)
    next(t for t in at.text_input if t.label == "Search for").input("a road")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception and not at.error
    caption = next(c.value for c in at.caption if "moments for" in c.value).replace("\\", "")
    assert "“a road” in 1 video (" in caption and " and 4 images" in caption, caption


def test_frame_search_labels_exports_have_distinct_short_names(app_home):
    _index_video(app_home, VIDEOS / "realshort.mp4")
    at = _run("pages/6_Frame_Search.py")
    next(t for t in at.text_input if t.label == "Search for").input("a road")
    next(b for b in at.button if b.label == "Search").click().run()
    next(b for b in at.button if b.proto.help == "mark relevant").click().run()
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Labels CSV", "Labels JSON"]


def test_frame_search_shows_a_truncated_video_note(app_home, tmp_path):
    data = (VIDEOS / "box.mp4").read_bytes()
    at = _run("pages/6_Frame_Search.py")
    _upload_videos(at, ("half.mp4", data[: len(data) // 2]))
    notes = [w.value.replace("\\", "") for w in at.warning]
    assert any(
        "half.mp4" in w and re.search(r"decoding stopped at 7\.\d s of 15\.2 s", w) for w in notes
    ), notes
    at.run()
    (option,) = at.multiselect(key="fs-videos").options
    assert re.search(r"half\.mp4 · videos · .* · truncated: frames up to 0:07", option), option
    assert any("decoding stopped at 7." in c.value.replace("\\", "") for c in at.caption)


def test_frame_search_path_box_is_a_form_that_indexes(app_home, tmp_path):
    """The path box and its button are one form, so Enter in the box indexes (as in a browser)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "short.mp4").write_bytes((IMAGES.parent / "video" / "realshort.mp4").read_bytes())
    at = _run("pages/6_Frame_Search.py")
    box = next(t for t in at.text_input if t.label.startswith("Video file or folder"))
    assert box.form_id, "the path box is not in a form: Enter would do nothing"
    box.input(str(folder))
    next(b for b in at.button if b.label == "Index videos").click().run()
    assert not at.exception
    assert any("1 added" in w.value for w in [*at.success, *at.warning, *at.info, *at.markdown])
    assert Library(app_home).catalog.counts()["videos"] == 1
