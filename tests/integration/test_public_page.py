"""The public page in a real browser (the system Chromium under Playwright)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from tests.integration.browser import shot
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def test_the_public_page_renders_in_a_browser(stack: Stack, page: Page) -> None:
    """GET / renders the public page in Chromium, and a screenshot of it is saved."""
    web_url = stack.web_url or stack.start_web()
    with stack.http() as http:
        published = http.get("/api/statements").json()["items"]

    answer = page.goto(f"{web_url}/")

    assert answer is not None and answer.status == 200, \
        f"GET / answered {answer and answer.status}: see {stack.root / 'web.log'}"
    assert "Loa" in page.title()
    assert page.locator("header h1").inner_text().strip() == "Loa"
    assert page.locator("main h2").first.is_visible()
    if not published:  # the stack is shared: other tests may have published by now
        assert page.locator("#empty").is_visible()
    path = shot(page, "public-empty")
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
