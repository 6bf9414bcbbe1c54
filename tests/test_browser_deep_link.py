"""A page opened by its address on a fresh server (a bookmark): shown inside the app's navigation.

Its own module, so its own app server that no one has visited yet.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_a_page_opened_by_its_address_is_shown_inside_the_app(app_url, browser):
    """A bookmark to a page, on a server no one has visited yet: the page shows within the app's
    navigation (Home first, no stray "app" entry), not on its own."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(f"{app_url}/Video_QA")
    page.get_by_role("heading", name="Ask about a video").wait_for()
    nav = page.get_by_test_id("stSidebarNav")
    links = nav.get_by_role("link")
    links.first.wait_for()
    names = [links.nth(i).inner_text().splitlines()[-1] for i in range(links.count())]
    assert names[0] == "Home" and "app" not in names and "Video QA" in names, names
    assert page.url.endswith("/Video_QA")
    page.close()
