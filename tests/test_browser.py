"""The real app in a real browser: Streamlit on 127.0.0.1 with the tiny profile, driven by Playwright."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import MEDIA

pytestmark = pytest.mark.browser


def test_upload_two_images_and_search(app_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(f"{app_url}/Image_Search")
    page.get_by_role("tab", name="Add images").click()
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Upload images")
    uploader.locator("input[type=file]").set_input_files(
        [str(MEDIA / "images" / "apple.jpg"), str(MEDIA / "images" / "dashcam_solidWhiteRight.jpg")]
    )
    add = page.get_by_role("button", name="Add uploaded images")
    expect(add).to_be_enabled()
    add.click()
    page.get_by_text(re.compile(r"2 added")).wait_for()

    page.get_by_role("tab", name="Search").click()
    page.get_by_role("textbox", name="Search for").last.fill("a red apple")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text(re.compile(r"\d+ hits for .a red apple")).wait_for()
    grid_images = page.get_by_test_id("stImage").locator("img")
    grid_images.first.wait_for()
    assert grid_images.count() == 2
    names = page.get_by_test_id("stMarkdownContainer").filter(
        has_text=re.compile(r"apple\.jpg|dashcam_solidWhiteRight\.jpg")
    )
    assert names.count() >= 2
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "image-search.png"), full_page=True)
    page.close()


def _moment_labels(page) -> list[str]:
    """The score · name · time line of each shown hit, in order."""
    cards = page.get_by_test_id("stMarkdownContainer").filter(
        has_text=re.compile(r"dashcam_highway\.mp4 · \d+:\d")
    )
    return [cards.nth(i).inner_text() for i in range(cards.count())]


def test_upload_video_search_mark_refine(app_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(180_000)
    page.goto(f"{app_url}/Frame_Search")
    page.get_by_role("tab", name="Add videos").click()
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Upload videos")
    uploader.locator("input[type=file]").set_input_files(
        str(MEDIA / "video" / "dashcam_highway.mp4")
    )
    add = page.get_by_role("button", name="Add uploaded videos")
    expect(add).to_be_enabled()
    add.click()
    page.get_by_text(re.compile(r"1 added.*video frames stored")).wait_for()

    page.reload()
    page.get_by_text("Group adjacent frames of a shot").click()  # every frame its own hit
    page.get_by_role("textbox", name="Search for").last.fill("cars ahead on a highway")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text(re.compile(r"moments for .cars ahead on a highway")).wait_for()
    before = _moment_labels(page)
    assert len(before) >= 3

    for _ in range(2):  # mark the two lowest shown hits relevant
        thumbs_up = page.get_by_role("button", name="Yes")
        thumbs_up.nth(thumbs_up.count() - 1 - _).click()
        page.get_by_text(re.compile(rf"{_ + 1} marked relevant")).wait_for()
    page.get_by_role("button", name="Refine").click()
    page.get_by_text(re.compile(r"feedback round 1")).wait_for()
    after = _moment_labels(page)
    assert after != before
    assert any("▲" in label for label in after)
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "frame-search.png"), full_page=True)
    page.close()


def test_caption_a_video(app_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(180_000)
    page.goto(f"{app_url}/Video_Captions")
    uploader = page.get_by_test_id("stFileUploader").first  # the video picker's Upload
    uploader.locator("input[type=file]").set_input_files(str(MEDIA / "video" / "box.mp4"))
    button = page.get_by_role("button", name="Caption video")
    expect(button).to_be_enabled()
    button.click()
    page.get_by_text(
        re.compile(r"box\.mp4 · 8 frames · \d+ segments")
    ).wait_for()  # waits up to 180 s
    expect(page.get_by_role("heading", name="Segments")).to_be_visible()
    frames = page.get_by_test_id("stImage").locator("img")
    expect(frames).to_have_count(8)
    page.get_by_role("button", name="Save results folder").click()
    expect(page.get_by_role("button", name="Download as zip")).to_be_visible()
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "captions.png"), full_page=True)
    page.close()


def test_ask_two_questions_about_a_video(app_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(240_000)
    page.goto(f"{app_url}/Video_QA")
    uploader = page.get_by_test_id("stFileUploader").first  # the video picker's Upload
    uploader.locator("input[type=file]").set_input_files(str(MEDIA / "video" / "vtest.avi"))
    chat = page.get_by_test_id("stChatInputTextArea")
    expect(chat).to_be_enabled(timeout=180_000)
    for number, question in enumerate(["What is happening?", "Are pedestrians visible?"], 1):
        chat.fill(question)
        chat.press("Enter")
        expect(page.get_by_test_id("stChatMessage")).to_have_count(2 * number, timeout=180_000)
    expect(page.get_by_text(re.compile(r"Frames used \(8\)"))).to_have_count(2)
    frames = page.get_by_test_id("stExpander").last.get_by_test_id("stImage")
    expect(frames).to_have_count(8)
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "video-qa.png"), full_page=True)
    page.close()


def test_zero_shot_two_dashcam_images(app_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(180_000)
    page.goto(f"{app_url}/Zero_Shot")
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Images")
    images = [
        str(MEDIA / "images" / "dashcam_solidWhiteRight.jpg"),
        str(MEDIA / "images" / "dashcam_solidYellowLeft.jpg"),
    ]
    uploader.locator("input[type=file]").set_input_files(images)
    expect(uploader.get_by_text(re.compile(r"owLeft\.jpg"))).to_be_visible()
    page.get_by_test_id("stSelectbox").filter(has_text="Preset labels").click()
    page.get_by_role("option", name="road scene").click()
    labels = page.get_by_role("textbox", name="Labels (comma or line separated)")
    expect(labels).to_have_count(1)  # the box is replaced when the preset changes
    expect(labels).to_have_value(re.compile("pedestrian"))
    page.get_by_role("button", name="Classify").click()
    expect(page.get_by_role("heading", name="Image × label heatmap")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    expect(
        page.get_by_text(re.compile("forward passes"))
    ).to_be_visible()  # the where-in-the-image map
    expect(page.get_by_test_id("stImage").locator("img")).to_have_count(1)
    shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "zero-shot.png"), full_page=True)
    page.close()


def test_summarize_a_video_from_a_url(app_url, browser, tmp_path):
    import functools
    import http.server
    import threading

    from playwright.sync_api import expect

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(MEDIA / "video")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(240_000)
        page.goto(f"{app_url}/Video_Summary")
        page.get_by_test_id("stButtonGroup").get_by_role("radio", name="Web link").click()
        url = page.get_by_role("textbox", name="Web link")
        url.fill(f"http://127.0.0.1:{server.server_address[1]}/box.mp4")
        url.press("Enter")  # fetches it
        expect(page.get_by_text(re.compile(r"^Fetched: "))).to_be_visible()
        seconds = page.get_by_role("spinbutton", name="Seconds per chunk")
        seconds.fill("8")
        seconds.press("Enter")
        button = page.get_by_role("button", name="Summarize")
        expect(button).to_be_enabled()
        button.click()
        expect(page.get_by_role("heading", name="Chapters")).to_be_visible(timeout=240_000)
        chapter = page.get_by_role("button", name=re.compile(r"0:00\.0-0:"))
        expect(chapter.first).to_be_visible()
        chapter.first.click()  # plays in a dialog, in front of the page
        expect(page.get_by_role("dialog").get_by_test_id("stVideo")).to_have_count(1)
        page.keyboard.press("Escape")
        expect(page.get_by_role("button", name="Markdown")).to_be_visible()
        shots = Path(os.environ.get("FRAMESCOPE_SCREENSHOTS", tmp_path))
        page.screenshot(path=str(shots / "summary.png"), full_page=True)
        page.close()
    finally:
        server.shutdown()
