"""The chat page through the ingress, once: served by the API pods on the ingress's origin, signed
in with the installation's API key, one answer streamed from the cluster's model."""

from __future__ import annotations

import re

from playwright.sync_api import expect, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.cluster import API_KEY, CHAT_MODEL, DEADLINE_S, E2E_URL, requires_cluster

pytestmark = requires_cluster


def test_the_chat_page_answers_through_the_ingress() -> None:
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(DEADLINE_S * 1000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{E2E_URL}/")
        if API_KEY:
            page.get_by_label("API key").fill(API_KEY)
            page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Model", exact=True).select_option(CHAT_MODEL)
        box = page.get_by_label("Message")
        box.fill("What is the capital of France? Answer with one word.")
        box.press("Enter")
        expect(page).to_have_url(re.compile(r"/chat/[^/]+$"))
        answer = page.locator("article.answer").last
        expect(answer).to_have_attribute("data-status", "complete", timeout=DEADLINE_S * 1000)
        assert answer.locator(".markdown").inner_text().strip()
        # The page's own URL reloads into the page (the API's fallback, through the ingress).
        page.reload()
        expect(page.locator("article.answer")).to_have_count(1)
        browser.close()
        assert not errors, errors
