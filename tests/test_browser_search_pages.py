"""Home, Image search and Frame search in a real browser, the way people use them: each test is one
user's path through several actions (Streamlit with the tiny profile, Debian's Chromium driven by
Playwright). The app of this module has its text model behind a small OpenAI-compatible server
(so Home can say whether the endpoint is reachable); everything else is local.

The tests run in file order and share one library: Frame search first, then Image search, exports
and Home."""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from browser_support import in_viewport, open_page, video_is_playing
from conftest import CHROMIUM, MEDIA, ROOT, _free_port, _require, _wait_healthy

pytestmark = pytest.mark.browser

VIDEO = MEDIA / "video"
IMAGES = MEDIA / "images"


# -- the app of this module: its text model is an OpenAI-compatible endpoint ---------------------


@pytest.fixture(scope="module")
def fake_llm():
    """A tiny OpenAI-compatible server: lists one model, answers every chat with one sentence."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, payload: dict, status: int = 200) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.endswith("/models"):
                self._send({"data": [{"id": "fake-llm"}]})
            else:
                self._send({"error": "not found"}, 404)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send({"choices": [{"message": {"content": "A short summary."}}]})

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, fake_llm, browser):
    """The app on its own data directory, with FRAMESCOPE_LLM_BASE_URL set to `fake_llm`."""
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    _require(MEDIA.is_dir(), f"shared media not found at {MEDIA}")
    home = tmp_path_factory.mktemp("browser-search-home")
    port = _free_port()
    env = {
        **os.environ,
        "FRAMESCOPE_HOME": str(home),
        "FRAMESCOPE_PROFILE": "tiny",
        "HF_HUB_OFFLINE": "1",
        "FRAMESCOPE_LLM_BASE_URL": fake_llm,
        "FRAMESCOPE_LLM_API_KEY": "sk-never-shown-789",
    }
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--server.headless", "true"]
    log_path = home / "streamlit.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log_path)
            # The app's front page first, as a user starts: the navigation (app.py) then serves
            # every page, also those opened by their address.
            first = browser.new_page()
            first.goto(url)
            first.get_by_test_id("stSidebarNav").wait_for(timeout=120_000)
            first.close()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- waiting as a user does: until the run an action started has finished ------------------------

_WATCH = """() => {
    window.__fsRan = false;
    if (!window.__fsWatching) {  // on the whole document: the app element may be replaced
        window.__fsWatching = true;
        new MutationObserver(records => {
            for (const r of records) {  // a short run may start and end before this is called
                const now = r.target.getAttribute('data-test-script-state');
                if (r.oldValue === 'running' || now === 'running') window.__fsRan = true;
            }
        }).observe(document.documentElement, {
            attributes: true,
            attributeOldValue: true,
            subtree: true,
            attributeFilter: ['data-test-script-state'],
        });
    }
}"""
_RAN = """() => window.__fsRan && document.querySelector('[data-testid="stApp"]')
    .getAttribute('data-test-script-state') === 'notRunning'"""


_BUSY = """() => window.__fsRan || document.querySelector('[data-testid="stApp"]')
    .getAttribute('data-test-script-state') !== 'notRunning'"""


def _rerun(page, act) -> None:
    """Do `act` (a click, Enter, an upload) and wait until the runs of the page script it starts
    have finished (a run that calls st.rerun() is followed by another): what is shown then is
    theirs, nothing left from before."""
    page.evaluate(_WATCH)
    act()
    page.wait_for_function(_RAN)
    while True:
        page.evaluate("() => { window.__fsRan = false; }")
        page.wait_for_timeout(300)
        if not page.evaluate(_BUSY):
            return
        page.wait_for_function(_RAN)


# -- what a user does on Frame search ------------------------------------------------------------


def _add_videos(page, files, report: str, collection: str | None = None) -> None:
    """Add videos tab: (the collection,) upload the files, Add, and wait for the report `report`
    (a regular expression) of this run."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Add videos").click()
    if collection is not None:
        box = page.get_by_role("textbox", name="Collection")
        box.fill(collection)
        _rerun(page, lambda: box.press("Enter"))
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Upload videos")
    if files is not None:  # (None: those uploaded before, again)
        _rerun(page, lambda: uploader.locator("input[type=file]").set_input_files(files))
        names = [f["name"] if isinstance(f, dict) else Path(f).name for f in _listed(files)]
        for name in names:  # uploaded: the button now sends it too
            expect(uploader.get_by_text(name, exact=True).first).to_be_visible()
    add = page.get_by_role("button", name="Add uploaded videos")
    expect(add).to_be_enabled()
    _rerun(page, add.click)
    expect(page.get_by_text(re.compile(report))).to_be_visible()


def _listed(files) -> list:
    return files if isinstance(files, list) else [files]


def _named(path: Path, name: str) -> dict:
    """A file to upload under another name."""
    mime = "video/mp4" if path.suffix == ".mp4" else "image/jpeg"
    return {"name": name, "mimeType": mime, "buffer": path.read_bytes()}


def _search_frames(page, text: str) -> str:
    """Search frames tab: search for `text`; the caption that says what was searched, once
    every moment shows."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Search frames").click()
    box = page.get_by_role("textbox", name="Search for")
    box.fill(text)
    _rerun(page, page.get_by_role("button", name="Search", exact=True).click)
    caption = page.get_by_text(re.compile(rf"moments for .{re.escape(text)}. in "))
    said = caption.inner_text()
    shown = int(re.search(r"Top (\d+) moments", said).group(1))
    expect(page.get_by_role("button", name="Play")).to_have_count(shown)
    return said


def _chips(page, label: str) -> list[str]:
    """What a multiselect holds, as its chips name it."""
    chips = page.get_by_test_id("stMultiSelect").filter(has_text=label).locator("[data-tag]")
    return [chips.nth(i).get_attribute("aria-label") for i in range(chips.count())]


def _video_chips(page) -> list[str]:
    return _chips(page, "Videos")


def _card(button):
    """The bordered card a button of the hit grid is in."""
    return button.locator("xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")


def _player(page):
    """The video of the player dialog, once it plays."""
    from playwright.sync_api import expect

    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    video = dialog.locator("video")
    expect(video).to_have_count(1)
    video.evaluate(
        "v => new Promise(done => { const check = () => (!v.paused && v.currentTime > 0) ? "
        "done() : setTimeout(check, 50); check(); })"
    )
    return video


def test_add_a_video_then_search_and_refine_in_the_same_visit(page):
    from playwright.sync_api import expect

    open_page(page, "Frame_Search")
    _add_videos(page, str(VIDEO / "realshort.mp4"), r"Collection 'videos': 1 added, 2 video")
    first = _search_frames(page, "a road at night")
    assert re.search(r"in 1 video \(\d+ frames?\)", first), first

    # A second video, in the same visit; the filter is not touched.
    _add_videos(
        page, str(VIDEO / "dashcam_highway.mp4"), r"Collection 'videos': 1 added, 1 unchanged"
    )
    page.get_by_role("tab", name="Search frames").click()
    videos = page.get_by_test_id("stMultiSelect").filter(has_text="Videos")
    expect(videos.locator("[data-tag]")).to_have_count(2)
    chips = _video_chips(page)
    assert len(chips) == 2 and any("dashcam_highway.mp4" in c for c in chips), chips
    second = _search_frames(page, "cars ahead on a highway")
    assert re.search(r"in 2 videos \(\d+ frames\)", second), second
    cards = page.get_by_test_id("stMarkdownContainer").filter(
        has_text=re.compile(r"dashcam_highway\.mp4 · \d+:\d")
    )
    expect(cards.first).to_be_visible()  # the new video is searched

    _rerun(page, page.get_by_role("button", name="Yes").first.click)
    expect(page.get_by_text("1 marked relevant")).to_be_visible()
    _rerun(page, page.get_by_role("button", name="Refine").click)
    expect(page.get_by_text(re.compile(r"feedback round 1"))).to_be_visible()
    assert any("▲" in c or "▼" in c for c in cards.all_inner_texts())  # what moved


def test_two_same_named_videos_from_two_collections_are_told_apart(page, tmp_path):
    from playwright.sync_api import expect

    open_page(page, "Frame_Search")
    clip = _named(VIDEO / "realshort.mp4", "box.mp4")
    _add_videos(page, clip, r"Collection 'holiday': 1 added", collection="holiday")
    _add_videos(page, None, r"Collection 'work': 1 added", collection="work")  # the same file
    page.get_by_role("tab", name="Search frames").click()
    videos = page.get_by_test_id("stMultiSelect").filter(has_text="Videos")
    expect(videos.locator("[data-tag]").filter(has_text="box.mp4")).to_have_count(2)
    chips = [c for c in _video_chips(page) if c.startswith("box.mp4")]
    assert len(chips) == 2, chips
    assert any("box.mp4 · holiday" in c for c in chips) and any(
        "box.mp4 · work" in c for c in chips
    )
    # The list of choices says the same: take one out, then open the list.
    work = next(c for c in chips if "box.mp4 · work" in c)
    filter_box = page.get_by_test_id("stMultiSelect").filter(has_text="Videos")
    _rerun(page, filter_box.locator(f'[aria-label="Remove {work}"]').click)
    assert work not in _video_chips(page)
    filter_box.locator('[aria-label="Open"]').click()
    option = page.get_by_role("option", name=re.compile(r"box\.mp4 · work"))
    expect(option).to_be_visible()
    page.keyboard.press("Escape")


def _earliest_play_button(page):
    """The Play button of the shown moment that starts earliest in its video."""
    best, best_time = None, None
    for button in page.get_by_role("button", name="Play").all():
        text = _card(button).inner_text()
        found = re.search(r"dashcam_highway\.mp4 · (\d+):(\d+(?:\.\d+)?)", text)
        if found:
            at = int(found.group(1)) * 60 + float(found.group(2))
            if best_time is None or at < best_time:
                best, best_time = button, at
    assert best is not None, "no dashcam_highway.mp4 moment shown"
    return best


def test_play_from_a_play_button_opens_a_playing_player_in_view(page):
    open_page(page, "Frame_Search")
    _search_frames(page, "a white car")
    button = _earliest_play_button(page)
    button.scroll_into_view_if_needed()
    _rerun(page, button.click)
    video = _player(page)
    assert in_viewport(page, video) and video_is_playing(page, video)
    page.get_by_role("dialog").get_by_text(re.compile(r"From \d+:\d")).wait_for()


def test_play_from_a_chart_point(page):
    open_page(page, "Frame_Search")
    _search_frames(page, "lane markings")
    chart = page.locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    points = chart.locator("g.trace.scatter").filter(has=page.locator("path.point"))
    # The first point of the first video's line: its earliest moment.
    point = points.first.locator("path.point").first
    box = point.bounding_box()
    assert box is not None
    _rerun(
        page, lambda: page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    )
    video = _player(page)
    assert in_viewport(page, video) and video_is_playing(page, video)
    # Closing the player and marking a hit does not bring the player back.
    page.keyboard.press("Escape")
    page.get_by_role("dialog").wait_for(state="hidden")
    _rerun(page, page.get_by_role("button", name="Yes").first.click)
    page.get_by_text("1 marked relevant").wait_for()
    assert page.get_by_role("dialog").count() == 0


def test_labels_exported_after_marking(page, tmp_path):
    open_page(page, "Frame_Search")
    _search_frames(page, "cars ahead")
    _rerun(page, page.get_by_role("button", name="Yes").nth(0).click)
    _rerun(page, page.get_by_role("button", name="No").nth(1).click)
    page.get_by_text("1 marked relevant, 1 irrelevant").wait_for()
    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Labels CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    assert sorted(r["label"] for r in rows) == ["irrelevant", "relevant"]
    assert all(r["video"] and r["timestamp"] for r in rows)
    with page.expect_download() as json_download:
        page.get_by_role("button", name="Labels JSON").click()
    labels = json.loads(Path(json_download.value.path()).read_text())
    assert sorted(r["label"] for r in labels) == ["irrelevant", "relevant"]
    assert {r["embedding_id"] for r in labels} == {int(r["embedding_id"]) for r in rows}


# -- Image search ---------------------------------------------------------------------------------


def _index_folder(page, folder: str, collection: str) -> None:
    """Add images tab: the collection, then the folder, submitted with Enter."""
    page.get_by_role("tab", name="Add images").click()
    box = page.get_by_role("textbox", name="Collection")
    box.fill(collection)
    _rerun(page, lambda: box.press("Enter"))
    folder_box = page.get_by_role("textbox", name=re.compile("Folder on this computer"))
    folder_box.fill(folder)
    _rerun(page, lambda: folder_box.press("Enter"))  # no click on the button: Enter submits


def _search_images(page, text: str, example: Path | None = None) -> str:
    """Search tab: search for text (and an example image); the caption, once every hit shows."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Search").click()
    page.get_by_role("textbox", name="Search for").fill(text)
    if example is not None:  # in the form: uploaded now, sent with the Search button
        uploader = page.get_by_test_id("stFileUploader").filter(has_text="example image")
        uploader.locator("input[type=file]").set_input_files(str(example))
        expect(uploader.get_by_text(example.name)).to_be_visible()
    _rerun(page, page.get_by_role("button", name="Search", exact=True).click)
    said = f"for “{text}”" + (f" and the image {example.name}" if example else "")
    caption = page.get_by_text(re.compile(rf"\d+ hits {re.escape(said)}"))
    text = caption.inner_text()
    shown = int(re.match(r"(\d+) hits", text).group(1))
    expect(page.get_by_role("button", name="More like this")).to_have_count(shown)
    return text


def _hit_cards(page) -> list[str]:
    """The text of each hit's card, in order."""
    return [_card(b).inner_text() for b in page.get_by_role("button", name="More like this").all()]


@pytest.fixture(scope="module")
def trip(tmp_path_factory) -> Path:
    """A folder of three photos and a video."""
    folder = tmp_path_factory.mktemp("trip")
    for name in ("apple.jpg", "orange.jpg", "butterfly.jpg"):
        (folder / name).write_bytes((IMAGES / name).read_bytes())
    (folder / "trip-clip.mp4").write_bytes((VIDEO / "realshort.mp4").read_bytes())
    return folder


def test_enter_in_the_folder_box_indexes_or_says_why_not(page, tmp_path):
    open_page(page, "Image_Search")
    _index_folder(page, str(tmp_path / "no-such-folder"), "trip")
    page.get_by_text("no such file or folder").wait_for()


def test_index_a_folder_of_photos_and_a_video_then_upload_a_photo_again(page, trip):
    from playwright.sync_api import expect

    open_page(page, "Image_Search")
    _index_folder(page, str(trip), "trip")
    expect(
        page.get_by_text(re.compile(r"Collection 'trip': 3 added, 1 video left for Frame search"))
    ).to_be_visible()
    expect(page.get_by_text(re.compile(r"1 video in the folder left for Frame"))).to_be_visible()

    page.get_by_role("tab", name="Search").click()
    collections = page.get_by_test_id("stMultiSelect").filter(has_text="Collections")
    expect(collections.locator('[data-tag][aria-label="trip"]')).to_have_count(1)  # no reload
    _rerun(page, page.get_by_text("Show hits below the relevance cutoff").click)
    caption = _search_images(page, "fruit on a table")
    assert "for “fruit on a table”" in caption
    cards = _hit_cards(page)
    assert not any("trip-clip.mp4" in c for c in cards), cards  # the video was not indexed
    trip_cards = [c for c in cards if "· trip" in c]
    assert len(trip_cards) == 3 and not any("frame at" in c for c in trip_cards)

    # The same photo again, uploaded: one hit that lists both paths.
    page.get_by_role("tab", name="Add images").click()
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Upload images")
    _rerun(
        page,
        lambda: uploader.locator("input[type=file]").set_input_files(
            _named(IMAGES / "apple.jpg", "my-apple.jpg")
        ),
    )
    _rerun(page, page.get_by_role("button", name="Add uploaded images").click)
    expect(
        page.get_by_text(re.compile(r"Collection 'trip': 1 (added|copies reused)"))
    ).to_be_visible()
    caption = _search_images(page, "fruit on a table", example=IMAGES / "apple.jpg")
    assert "for “fruit on a table” and the image apple.jpg" in caption, caption
    cards = _hit_cards(page)
    apples = [c for c in cards if "apple" in c]
    assert len(apples) == 1, apples
    assert "2 copies" in apples[0] and str(trip / "apple.jpg") in apples[0]
    assert "my-apple.jpg" in apples[0]


def test_hits_exported_as_csv_and_json(page, trip):
    open_page(page, "Image_Search")
    _rerun(page, page.get_by_text("Show hits below the relevance cutoff").click)
    _search_images(page, "a fruit", example=IMAGES / "apple.jpg")
    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    apples = [r for r in rows if str(trip / "apple.jpg") in r["paths"]]
    assert len(apples) == 1 and len(apples[0]["paths"].split(" | ")) == 2
    with page.expect_download() as json_download:
        page.get_by_role("button", name="Export JSON").click()
    data = json.loads(Path(json_download.value.path()).read_text())
    assert data["text"] == "a fruit" and data["examples"] == ["apple.jpg"]
    assert len(data["hits"]) == len(rows)
    (apple,) = [h for h in data["hits"] if str(trip / "apple.jpg") in h["paths"]]
    assert len(apple["paths"]) == 2


# -- Home ---------------------------------------------------------------------------------------


def test_home_after_using_the_models_shows_the_four_roles(page):
    from playwright.sync_api import expect

    open_page(page, "Video_Captions")  # loads the captioner
    open_page(page, "Video_Summary")  # loads the VLM and the text model (the endpoint)
    open_page(page, "")
    table = page.get_by_test_id("stTable")
    expect(table).to_be_visible()
    rows = {}
    for row in table.locator("tbody tr").all():
        cells = [c.inner_text().strip() for c in row.locator("th, td").all()]
        rows[cells[0]] = cells[1:]
    assert list(rows) == [
        "image-text embeddings (CLIP)",
        "captioner (BLIP)",
        "vision-language model",
        "text model",
    ]
    for role, (model, device, weights, state) in rows.items():
        assert model and device and weights, role
        assert state.startswith("loaded"), (role, state)
    assert rows["text model"][2] == "endpoint"
    assert rows["text model"][3] == "loaded · endpoint reachable"
    assert rows["captioner (BLIP)"][2] == "random (tiny profile)"
    assert "sk-never-shown-789" not in page.content()
