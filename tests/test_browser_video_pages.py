"""The video pages (Captions, Video QA, Summary, Zero shot's video frames) the way people use
them, in Chromium: one video picker everywhere (Upload · Library · Web link), an error followed by
a good file, switching sources and back, play-from-here in view and playing, one bad image among
good ones, the zero-shot timeline, and the exports downloaded and read.

Short videos (realshort.mp4: 1.2 s, box.mp4: 15 s) and few frames keep each scenario quick."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
import zipfile

import pytest
from browser_support import MEDIA, in_viewport, open_page, settle, video_is_playing

pytestmark = pytest.mark.browser

VIDEOS = MEDIA / "video"
IMAGES = MEDIA / "images"
NOT_A_VIDEO = b"shopping list: milk, eggs, bread\n" * 40  # a text file renamed .mp4


def _expect():
    from playwright.sync_api import expect

    return expect


# -- what a user does ------------------------------------------------------------------------


def rerun_done(page) -> None:
    """After an action: wait for the page's script to start (it may take a moment to be seen),
    then for it to finish, so the next action meets the page the user would."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # It may finish before it can be seen, or there may be nothing to run.
    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_test_id("stStatusWidget").wait_for(timeout=2_000)
    settle(page)


def choose_source(page, source: str) -> None:
    """Press Upload, Library or Web link in the video picker."""
    page.get_by_test_id("stButtonGroup").get_by_role("radio", name=source, exact=True).click()
    rerun_done(page)


def upload_video(page, video) -> None:
    """Give the picker's uploader a file: a path, or (name, bytes)."""
    uploader = page.get_by_test_id("stFileUploader").first.locator("input[type=file]")
    if isinstance(video, tuple):
        name, data = video
        uploader.set_input_files({"name": name, "mimeType": "video/mp4", "buffer": data})
    else:
        uploader.set_input_files(str(video))
    shown = video[0] if isinstance(video, tuple) else video.name
    page.get_by_test_id("stFileChipName").filter(has_text=shown).wait_for(timeout=30_000)
    rerun_done(page)


def pick_library_video(page, name: str) -> None:
    """In Library, choose the video whose listing starts with `name`."""
    page.get_by_test_id("stSelectbox").first.click()  # the picker's comes first
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} · ")).first.click()
    rerun_done(page)


def press(page, label: str) -> None:
    page.get_by_role("button", name=label, exact=True).click()
    rerun_done(page)


def fill_number(page, label: str, value: str, *, in_form: bool = False) -> None:
    box = page.get_by_role("spinbutton", name=label)
    box.fill(value)
    box.press("Tab")
    if not in_form:  # a form's inputs are sent with its button
        rerun_done(page)


def errors(page):
    return page.get_by_test_id("stAlertContentError")


def error_text(page) -> str:
    """The one error shown, as the user reads it (without its icon)."""
    _expect()(errors(page)).to_have_count(1)
    return errors(page).get_by_test_id("stMarkdownContainer").inner_text().strip()


def warnings(page):
    return page.get_by_test_id("stAlertContentWarning")


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def check_player(page, start_label: str) -> None:
    """The dialog's video is on screen and playing (from the moment pressed)."""
    expect = _expect()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    video = dialog.locator("video")
    expect(video).to_have_count(1)
    assert in_viewport(page, video), "the player is not on screen"
    wait_until(lambda: video_is_playing(page, video), what="the video to play")
    expect(dialog.get_by_text(f"From {start_label}")).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)


@pytest.fixture(autouse=True)
def _quick_failures(page):
    """The models are tiny: a step that takes over a minute is broken, not slow."""
    page.set_default_timeout(60_000)
    _expect().set_options(timeout=60_000)


_in_library: set[str] = set()


def ensure_in_library(page) -> None:
    """dashcam_highway.mp4 (8.8 s) in the library, once per app: a user captions an upload
    (which adds it there), two frames."""
    if page.app_url in _in_library:
        return
    open_page(page, "Video_Captions")
    upload_video(page, VIDEOS / "dashcam_highway.mp4")
    fill_number(page, "Most frames", "2", in_form=True)
    press(page, "Caption video")
    page.get_by_text(re.compile(r"dashcam_highway\.mp4 · 2 frames")).wait_for()
    _in_library.add(page.app_url)


# -- Video captions --------------------------------------------------------------------------


def test_captions_error_between_two_good_videos_and_zip_export(page):
    """Good video, a text file renamed .mp4, a good video again: the error names the file as
    uploaded, nothing of the first video's results stays under it, and the zip holds the frames,
    SRT and JSON of the last one."""
    expect = _expect()
    open_page(page, "Video_Captions")
    fill_number(page, "Seconds between frames", "0.5", in_form=True)
    upload_video(page, VIDEOS / "realshort.mp4")
    press(page, "Caption video")
    expect(page.get_by_text(re.compile(r"realshort\.mp4 · 3 frames"))).to_be_visible()

    upload_video(page, ("notes.mp4", NOT_A_VIDEO))
    expect(page.get_by_role("heading", name="Segments")).to_have_count(0)  # not for this file
    press(page, "Caption video")
    message = error_text(page)
    assert message.startswith("notes.mp4: not a supported video"), message
    assert "uploads/" not in message
    expect(page.get_by_role("heading", name="Segments")).to_have_count(0)
    expect(page.get_by_test_id("stImage")).to_have_count(0)
    expect(page.get_by_test_id("stProgress")).to_have_count(0)

    upload_video(page, VIDEOS / "box.mp4")
    fill_number(page, "Most frames", "4", in_form=True)
    prompt = page.get_by_role("textbox", name=re.compile(r"^Caption prompt"))
    # A user looks before typing: right after a run that replaced an error, Streamlit's form
    # takes a moment (well under 1.5 s) before Enter submits it.
    page.wait_for_timeout(1_500)
    prompt.fill("a picture of")
    prompt.press("Enter")  # Enter in a text box runs what it is for
    rerun_done(page)
    expect(page.get_by_text(re.compile(r"box\.mp4 · 4 frames · \d+ segments"))).to_be_visible()
    expect(errors(page)).to_have_count(0)
    expect(page.get_by_test_id("stImage")).to_have_count(4)

    press(page, "Save results folder")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download as zip").click()
    with zipfile.ZipFile(io.BytesIO(info.value.path().read_bytes())) as archive:
        names = set(archive.namelist())
        frames = sorted(n for n in names if re.fullmatch(r"frame_\d\d\.jpg", n))
        assert len(frames) == 4 and archive.read(frames[0])[:2] == b"\xff\xd8"
        srt = archive.read("captions.srt").decode()
        assert re.search(r"00:00:00,000 --> 00:00:\d\d,\d{3}", srt)
        data = json.loads(archive.read("captions.json"))
    assert "box.mp4" in json.dumps(data)
    assert len(data["frames"]) == 4


def test_captions_switching_sources_keeps_the_page_consistent(page):
    """Upload → Library → Upload → Library: results show only while their video is chosen."""
    expect = _expect()
    open_page(page, "Video_Captions")
    upload_video(page, VIDEOS / "realshort.mp4")
    press(page, "Caption video")
    result = page.get_by_text(re.compile(r"realshort\.mp4 · \d+ frames?"))
    expect(result).to_be_visible()

    choose_source(page, "Library")
    pick_library_video(page, "realshort.mp4")
    expect(result).to_be_visible()  # the upload is this library video: the same file, its captions
    expect(page.get_by_role("button", name="Caption video")).to_be_enabled()

    choose_source(page, "Upload")
    expect(page.get_by_role("heading", name="Segments")).to_have_count(0)  # nothing chosen
    expect(page.get_by_role("button", name="Caption video")).to_be_disabled()
    expect(errors(page)).to_have_count(0)

    choose_source(page, "Library")
    expect(result).to_be_visible()  # the library video's captions again
    expect(errors(page)).to_have_count(0)


# -- Video QA ----------------------------------------------------------------------------------


def ask(page, question: str, answers: int) -> None:
    chat = page.get_by_test_id("stChatInputTextArea")
    _expect()(chat).to_be_enabled()
    chat.fill(question)
    chat.press("Enter")
    _expect()(page.get_by_test_id("stChatMessage")).to_have_count(2 * answers)
    rerun_done(page)


def test_video_qa_error_between_two_good_videos(page):
    expect = _expect()
    open_page(page, "Video_QA")
    upload_video(page, VIDEOS / "realshort.mp4")
    ask(page, "What is happening?", 1)

    upload_video(page, ("broken.mp4", NOT_A_VIDEO))
    message = error_text(page)
    assert message.startswith("broken.mp4: not a supported video"), message
    assert "uploads/" not in message
    expect(page.get_by_test_id("stChatMessage")).to_have_count(0)  # the other video's chat
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_disabled()

    upload_video(page, VIDEOS / "box.mp4")
    expect(errors(page)).to_have_count(0)
    ask(page, "What is on the table?", 1)
    expect(page.get_by_text("What is happening?")).to_have_count(0)


def test_video_qa_play_from_here_is_in_view_and_playing(page):
    """Ask, open the frames, press a frame's time: a player opens in view and plays from there;
    close it, scroll down, press another: the same."""
    expect = _expect()
    open_page(page, "Video_QA")
    upload_video(page, VIDEOS / "dashcam_highway.mp4")
    page.get_by_role("radio", name="spread evenly").check(force=True)
    rerun_done(page)
    ask(page, "What moves?", 1)
    times = page.get_by_test_id("stExpander").get_by_role(
        "button", name=re.compile(r"^0:\d\d\.\d$")
    )
    expect(times.first).to_be_visible()
    assert times.count() == 8
    later = times.nth(4)
    label = re.search(r"0:\d\d\.\d", later.inner_text()).group()
    later.click()
    check_player(page, label)

    page.mouse.wheel(0, 2000)
    last = times.nth(1)
    label = re.search(r"0:\d\d\.\d", last.inner_text()).group()
    last.click()
    check_player(page, label)


def _file(path) -> dict:
    return {"name": path.name, "mimeType": "image/jpeg", "buffer": path.read_bytes()}


def test_video_qa_one_bad_image_among_good_ones(page):
    expect = _expect()
    open_page(page, "Video_QA")
    page.get_by_role("radio", name="Images").check(force=True)
    rerun_done(page)
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(
        [
            _file(IMAGES / "apple.jpg"),
            {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a picture"},
            _file(IMAGES / "orange.jpg"),
        ]
    )
    page.get_by_test_id("stFileChipName").filter(has_text="orange.jpg").wait_for(timeout=30_000)
    rerun_done(page)
    skipped = warnings(page).filter(has_text="notes.jpg")
    expect(skipped).to_have_count(1)
    assert "not a readable image" in skipped.inner_text()
    expect(errors(page)).to_have_count(0)
    ask(page, "Which fruits are these?", 1)
    expect(page.get_by_text("Frames used (2)")).to_be_visible()


def test_video_qa_switching_sources_keeps_each_chat(page):
    expect = _expect()
    ensure_in_library(page)
    open_page(page, "Video_QA")
    choose_source(page, "Library")
    pick_library_video(page, "dashcam_highway.mp4")
    ask(page, "Is it day or night?", 1)

    choose_source(page, "Upload")
    expect(page.get_by_test_id("stChatMessage")).to_have_count(0)
    expect(page.get_by_test_id("stChatInputTextArea")).to_be_disabled()
    upload_video(page, VIDEOS / "box.mp4")
    expect(page.get_by_test_id("stChatMessage")).to_have_count(0)  # a new video, a new chat

    choose_source(page, "Library")
    expect(page.get_by_text("Is it day or night?")).to_be_visible()  # its chat is kept
    expect(page.get_by_test_id("stChatMessage")).to_have_count(2)
    expect(errors(page)).to_have_count(0)


# -- Video summary ------------------------------------------------------------------------------


_COUNT_BARS = """() => {
    window.__mostBars = 0;
    const count = () => {
        const n = document.querySelectorAll('[data-testid="stProgress"]').length;
        window.__mostBars = Math.max(window.__mostBars, n);
    };
    new MutationObserver(count).observe(document.body, {childList: true, subtree: true});
}"""


def summarize(page, *, works: bool = True) -> None:
    """Press Summarize: at most one progress bar while it runs (one when it gets to work), and
    none left when it is over."""
    page.evaluate(_COUNT_BARS)
    page.get_by_role("button", name="Summarize").click()
    rerun_done(page)
    most = page.evaluate("() => window.__mostBars")
    assert most == 1 if works else most <= 1, f"{most} progress bars at once"
    _expect()(page.get_by_test_id("stProgress")).to_have_count(0)


def test_summary_error_between_two_good_videos_and_exports(page):
    expect = _expect()
    open_page(page, "Video_Summary")
    fill_number(page, "Frames per chunk", "1")
    upload_video(page, VIDEOS / "realshort.mp4")
    summarize(page)
    expect(page.get_by_role("heading", name="Chapters")).to_be_visible()

    upload_video(page, ("notes.mp4", NOT_A_VIDEO))
    expect(page.get_by_role("heading", name="Chapters")).to_have_count(0)
    summarize(page, works=False)
    message = error_text(page)
    assert message.startswith("notes.mp4: not a supported video"), message
    assert "uploads/" not in message
    expect(page.get_by_role("heading", name="Chapters")).to_have_count(0)

    upload_video(page, VIDEOS / "box.mp4")
    fill_number(page, "Seconds per chunk", "8")
    summarize(page)
    expect(errors(page)).to_have_count(0)
    expect(page.get_by_role("heading", name="Chapters")).to_be_visible()
    expect(page.get_by_text("box", exact=True)).to_be_visible()  # the title: box.mp4's name

    with page.expect_download() as info:
        page.get_by_role("button", name="Markdown").click()
    markdown = info.value.path().read_text()
    assert markdown.lstrip().startswith("# box") and "0:00" in markdown
    with page.expect_download() as info:
        page.get_by_role("button", name="JSON").click()
    data = json.loads(info.value.path().read_text())
    assert data["title"] == "box"
    assert len(data["chapters"]) >= 1 and data["chapters"][0]["start"] == 0


def test_summary_of_a_library_video_with_chapter_play(page):
    """Summary can pick a library video; a chapter's button plays it in view; Upload and back."""
    expect = _expect()
    ensure_in_library(page)
    open_page(page, "Video_Summary")
    choose_source(page, "Library")
    pick_library_video(page, "dashcam_highway.mp4")
    fill_number(page, "Frames per chunk", "1")
    summarize(page)
    expect(page.get_by_role("heading", name="Chapters")).to_be_visible()
    chapter = page.get_by_role("button", name=re.compile(r"0:00\.0-0:"))
    chapter.first.click()
    check_player(page, "0:00.0")

    choose_source(page, "Upload")
    expect(page.get_by_role("heading", name="Chapters")).to_have_count(0)
    expect(page.get_by_role("button", name="Summarize")).to_be_disabled()
    choose_source(page, "Library")
    expect(page.get_by_role("heading", name="Chapters")).to_be_visible()


# -- Zero shot: video frames ------------------------------------------------------------------


def zero_shot_video(page) -> None:
    open_page(page, "Zero_Shot")
    page.get_by_role("radio", name="Video frames").check(force=True)
    rerun_done(page)
    page.get_by_role("textbox", name="Labels (comma or line separated)").fill(
        "a car, a box, a person"
    )


def test_zero_shot_video_timeline_error_between_two_good_videos(page):
    expect = _expect()
    zero_shot_video(page)
    upload_video(page, VIDEOS / "realshort.mp4")
    press(page, "Classify")
    expect(page.get_by_role("heading", name="Labels over time")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)

    upload_video(page, ("notes.mp4", NOT_A_VIDEO))
    expect(page.get_by_role("heading", name="Labels over time")).to_have_count(0)
    press(page, "Classify")
    message = error_text(page)
    assert message.startswith("notes.mp4: not a supported video"), message
    assert "uploads/" not in message
    expect(page.locator(".js-plotly-plot")).to_have_count(0)

    upload_video(page, VIDEOS / "box.mp4")
    fill_number(page, "Seconds between frames", "3")
    press(page, "Classify")
    expect(errors(page)).to_have_count(0)
    expect(page.get_by_role("heading", name="Labels over time")).to_be_visible()
    chart = page.locator(".js-plotly-plot")
    expect(chart).to_have_count(1)
    expect(chart.locator(".legendtext")).to_have_text(["a car", "a box", "a person"])
    with page.expect_download() as info:
        page.get_by_role("button", name="Export CSV").click()
    rows = info.value.path().read_text().strip().splitlines()
    assert 1 + 5 <= len(rows) <= 1 + 6  # a header and a frame every 3 s of 15 s


def test_zero_shot_video_switching_sources(page):
    expect = _expect()
    ensure_in_library(page)
    zero_shot_video(page)
    choose_source(page, "Library")
    pick_library_video(page, "dashcam_highway.mp4")
    page.get_by_role("textbox", name="Labels (comma or line separated)").press("Control+Enter")
    rerun_done(page)  # Ctrl+Enter in the labels runs it, as the Classify button does
    expect(page.get_by_role("heading", name="Labels over time")).to_be_visible()

    choose_source(page, "Upload")
    expect(page.get_by_role("heading", name="Labels over time")).to_have_count(0)
    choose_source(page, "Library")
    expect(page.get_by_role("heading", name="Labels over time")).to_be_visible()
    expect(errors(page)).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
