"""Web links in the real app, in a real browser, as a user would use them: a video or a playlist
pasted on Frame search, and a link as the video source of Video QA. The app runs with the
test-only loopback setting; the videos come from the shared media served on 127.0.0.1, and the
pages that show them from a small server of this module."""

from __future__ import annotations

import http.server
import os
import re
import threading
from pathlib import Path

import pytest
from browser_support import open_page, settle
from conftest import MEDIA

pytestmark = pytest.mark.browser


def _page(title: str, *videos: str) -> bytes:
    tags = "".join(f'<video src="{v}" controls></video>\n' for v in videos)
    return f"<!doctype html><html><head><title>{title}</title></head><body>\n{tags}</body></html>".encode()


@pytest.fixture(scope="module")
def pages(media_server):
    """Web pages with videos on them (the videos themselves are the media server's)."""
    if not (MEDIA / "video" / "box.mp4").is_file():
        pytest.skip(f"shared media not found at {MEDIA}")
    content = {
        "/highway.html": _page("Highway at dusk", media_server.url("video/dashcam_highway.mp4")),
        "/clips.html": _page(
            "Three clips",
            media_server.url("video/box.mp4"),
            media_server.url("video/realshort.mp4"),
            media_server.url("video/missing.mp4"),  # not on the server: 404
        ),
        "/box.html": _page("A box on a table", media_server.url("video/box.mp4")),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = content.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}{path}"
    yield server
    server.shutdown()
    server.server_close()


def _add_from_link(page, link: str) -> None:
    page.get_by_role("tab", name="Add videos").click()
    box = page.get_by_role("textbox", name="Video, playlist or channel link")
    box.fill(link)
    box.press("Enter")  # the form submits on Enter


def _line(page, text):
    """The line a video of a link keeps under the progress bar (not the bar's own text)."""
    return page.get_by_test_id("stText").filter(has_text=text)


def _choose_source(page, source: str) -> None:
    """Press Upload, Library or Web link in the video picker (a segmented control)."""
    picker = page.get_by_test_id("stButtonGroup").filter(has_text="Web link")
    picker.get_by_role("radio", name=source, exact=True).click()
    page.wait_for_timeout(500)  # the rerun it starts
    settle(page)


def _moment_labels(page, name: str) -> list[str]:
    cards = page.get_by_test_id("stMarkdownContainer").filter(
        has_text=re.compile(rf"{re.escape(name)} · \d+:\d")
    )
    return [cards.nth(i).inner_text() for i in range(cards.count())]


def test_a_video_link_is_indexed_searched_and_refined_in_one_visit(
    page, pages, media_server, tmp_path
):
    from playwright.sync_api import expect

    open_page(page, "Frame_Search")
    _add_from_link(page, pages.url("/highway.html"))
    expect(_line(page, "1/1 Highway at dusk: done")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Collection 'videos': 1 added"))).to_be_visible()
    assert media_server.hits.get("/video/dashcam_highway.mp4", 0) >= 1

    page.get_by_role("tab", name="Search frames").click()
    videos = page.get_by_test_id("stMultiSelect").filter(has_text="Videos")
    expect(videos).to_contain_text("Highway at dusk")  # listed by its title
    expect(videos).not_to_contain_text(".mp4")  # not by a download's file name
    page.get_by_text("Group adjacent frames of a shot").click()  # every frame its own hit
    page.get_by_role("textbox", name="Search for").fill("cars ahead on a highway")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text(re.compile(r"moments for .cars ahead on a highway")).wait_for()
    before = _moment_labels(page, "Highway at dusk")
    assert len(before) >= 3

    for n in range(2):  # mark the two lowest shown hits relevant
        thumbs_up = page.get_by_role("button", name="Yes")
        thumbs_up.nth(thumbs_up.count() - 1 - n).click()
        page.get_by_text(re.compile(rf"{n + 1} marked relevant")).wait_for()
    page.get_by_role("button", name="Refine").click()
    page.get_by_text(re.compile(r"feedback round 1")).wait_for()
    after = _moment_labels(page, "Highway at dusk")
    assert after != before and any("▲" in label for label in after)
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "video-link-refined.png"), full_page=True)

    # the same link again: found in the library, nothing downloaded again
    hits = media_server.hits.get("/video/dashcam_highway.mp4", 0)
    _add_from_link(page, pages.url("/highway.html"))
    expect(_line(page, "1/1 Highway at dusk: already in the library")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Collection 'videos': 1 unchanged"))).to_be_visible()
    assert media_server.hits.get("/video/dashcam_highway.mp4", 0) == hits


def test_a_playlist_link_shows_a_line_per_video_and_the_broken_ones_reason(
    page, pages, media_server, tmp_path
):
    from playwright.sync_api import expect

    open_page(page, "Frame_Search")
    page.get_by_role("tab", name="Add videos").click()
    page.get_by_role("textbox", name="Collection").fill("playlist")
    page.get_by_role("textbox", name="Collection").press("Enter")
    settle(page)
    _add_from_link(page, pages.url("/clips.html"))
    expect(_line(page, "1/3 Three clips (1): done")).to_be_visible()
    expect(_line(page, "2/3 Three clips (2): done")).to_be_visible()
    broken = _line(page, re.compile(r"^3/3 Three clips \(3\): failed: .*404"))
    expect(broken).to_be_visible()
    summary = page.get_by_text(re.compile(r"Collection 'playlist': 2 added.*1 failed"))
    expect(summary).to_be_visible()
    summary.scroll_into_view_if_needed()
    assert media_server.hits.get("/video/missing.mp4", 0) >= 1
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "playlist-link-report.png"))

    page.get_by_role("tab", name="Search frames").click()
    videos = page.get_by_test_id("stMultiSelect").filter(has_text="Videos")
    expect(videos).to_contain_text("Three clips (1)")
    expect(videos).to_contain_text("Three clips (2)")
    expect(videos).not_to_contain_text("Three clips (3)")


def test_a_web_link_is_the_video_of_video_qa_and_then_in_the_library(page, pages, media_server):
    from playwright.sync_api import expect

    open_page(page, "Video_QA")
    _choose_source(page, "Web link")
    box = page.get_by_role("textbox", name="Web link")
    box.fill(pages.url("/box.html"))
    box.press("Enter")
    expect(
        page.get_by_text(re.compile(r"Fetched: A box on a table · web · 15\.2 s"))
    ).to_be_visible()
    chat = page.get_by_test_id("stChatInputTextArea")
    expect(chat).to_be_enabled()
    chat.fill("What is on the table?")
    chat.press("Enter")
    expect(page.get_by_test_id("stChatMessage")).to_have_count(2)
    expect(page.get_by_text(re.compile(r"Frames used \(\d+\)"))).to_be_visible()

    _choose_source(page, "Library")
    chosen = page.get_by_role("combobox", name="Library video")
    expect(chosen).to_have_value("A box on a table · web · 15.2 s")  # the only one, chosen
    expect(page.get_by_test_id("stChatMessage")).to_have_count(2)  # the same video, its chat kept
