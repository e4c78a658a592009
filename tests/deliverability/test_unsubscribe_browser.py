"""The unsubscribe page in a real browser with JavaScript off: open the link, press the button.

Runs Chromium headless through Playwright against the live test server, as
tests/test_dashboard_browser.py does. The screenshots (var/unsubscribe-*.png)
are what a recipient sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deliverability.models import Suppression
from deliverability.unsubscribe import PATH, unsubscribe_token
from tests.factories import TaskFactory

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "var"


def test_the_confirmation_page_unsubscribes_when_its_button_is_pressed(live_server):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium, or set CHROMIUM_PATH")
    from playwright.sync_api import sync_playwright

    task = TaskFactory()
    token = unsubscribe_token(owner_id=task.owner_id, task_id=task.pk, email="ann@example.org")
    SCREENSHOTS.mkdir(exist_ok=True)
    requests: list[str] = []

    # No ORM from here on: the browser's event loop shares this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(java_script_enabled=False)
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            response = page.goto(f"{live_server.url}/{PATH}{token}/")
            assert response.status == 200
            assert page.locator("main").get_attribute("data-state") == "confirm"
            assert page.locator("#email").inner_text() == "ann@example.org"
            assert context.cookies() == []
            page.screenshot(path=str(SCREENSHOTS / "unsubscribe-confirm.png"))
            confirm_requests = list(requests)

            with page.expect_navigation():
                page.get_by_role("button", name="Unsubscribe").click()

            assert page.locator("main").get_attribute("data-state") == "done"
            assert page.locator("h1").inner_text() == "You are unsubscribed"
            assert "ann@example.org will get no more mail from this sender." in page.locator("main").inner_text()
            page.screenshot(path=str(SCREENSHOTS / "unsubscribe-done.png"))
        finally:
            browser.close()

    # The page loaded nothing else (no scripts, styles, fonts or images from anywhere).
    assert confirm_requests == [f"{live_server.url}/{PATH}{token}/"]
    assert list(Suppression.objects.values_list("owner_id", "email", "reason", "source", "task_id")) == [
        (task.owner_id, "ann@example.org", "unsubscribed", "unsubscribe", task.pk)
    ]
