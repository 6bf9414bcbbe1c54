"""Helpers for the real-browser scenarios: wait the way a user does, and check what they would
see (the fixtures that start the app, Chromium and a media server are in conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
CHROMIUM = "/usr/bin/chromium"


def open_page(page, path: str) -> None:
    """Go to an app page ("Frame_Search") and wait until its script has run."""
    page.goto(f"{page.app_url}/{path}")
    settle(page)


def settle(page, timeout: float = 180_000) -> None:
    """Wait until Streamlit has finished running the page script (its status widget is gone)."""
    page.wait_for_load_state("networkidle")
    page.get_by_test_id("stApp").wait_for()
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout
    )


def in_viewport(page, locator) -> bool:
    """Whether the element is (at least partly) on screen."""
    box = locator.bounding_box()
    size = page.viewport_size
    return bool(box) and box["y"] < size["height"] and box["y"] + box["height"] > 0


def video_is_playing(page, locator) -> bool:
    return bool(locator.evaluate("v => !v.paused && v.currentTime > 0"))


def screenshot_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:80]
