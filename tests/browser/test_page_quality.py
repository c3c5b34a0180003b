"""The page's quality bar: no serious accessibility violations (axe-core), light and dark, usable
375 px wide; and the README's screenshot, which this test makes (`make screenshot`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import OpenPage, axe_violations
from tests.browser.test_chat_page import ask, choose_model, composer_menu, set_options, wait_done
from tests.conftest import ROOT, ApiProcess

pytestmark = pytest.mark.triton

SCREENSHOT = ROOT / "docs" / "images" / "chat-page.png"


def checked(page: Page, where: str) -> list[str]:
    return [f"{where}: {v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
            for v in axe_violations(page)]  # fmt: skip


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations(web_api: ApiProcess, open_page: OpenPage, scheme: str) -> None:
    found: list[str] = []
    sign_in = open_page(web_api, key=None, color_scheme=scheme)
    expect(sign_in.get_by_label("API key")).to_be_visible()
    found += checked(sign_in, "sign-in")

    page = open_page(web_api, color_scheme=scheme)
    choose_model(page, "tool-caller")
    ask(page, 'call demo__add {"a": 1, "b": 2}')
    wait_done(page)
    choose_model(page, "synthetic")
    set_options(page, max_tokens=6)
    composer_menu(page, "Knowledge").click()
    page.get_by_label("handbook").check()
    composer_menu(page, "Knowledge (1)").click()
    ask(page, "What is in the handbook? Here is `code` and a [link](https://example.com).")
    answer = wait_done(page)
    answer.get_by_role("button", name="Usage").click()
    page.locator("details.tool-card summary").first.click()
    found += checked(page, "chat")
    composer_menu(page, "Options").click()
    found += checked(page, "options")
    composer_menu(page, "Options").click()
    if answer.locator(".source-chip").count():
        answer.locator(".source-chip").first.click()
        found += checked(page, "source")
        page.get_by_role("button", name="Close source").click()
    page.get_by_role("button", name="Documents").click()
    expect(page.get_by_role("dialog", name="Knowledge bases")).to_be_visible()
    found += checked(page, "documents")
    assert not found, "\n".join(found)


def test_usable_375_px_wide(web_api: ApiProcess, open_page: OpenPage) -> None:
    page = open_page(web_api, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    choose_model(page, "synthetic")
    set_options(page, max_tokens=40)
    ask(page, "A long question that wraps over several lines on a narrow phone screen, " * 3)
    wait_done(page)
    # Nothing is wider than the screen; the chat list is one tap away, the composer in view.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.evaluate("document.body.scrollWidth") <= 375
    expect(page.get_by_label("Message")).to_be_in_viewport()
    chats = page.get_by_role("navigation", name="Chats")
    expect(chats).not_to_be_visible()
    page.get_by_role("button", name="Chats").click()
    expect(chats).to_be_visible()
    chats.get_by_role("link", name="New chat").click()
    expect(chats).not_to_be_visible()
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()


def test_the_screenshot(web_api: ApiProcess, open_page: OpenPage, tmp_path: Path) -> None:
    """The README's picture of the page; `make screenshot` (KUBECHAT_SCREENSHOT=1) writes it into docs."""
    page = open_page(web_api, viewport={"width": 1280, "height": 800}, color_scheme="light")
    page.get_by_role("button", name="Documents").click()
    dialog = page.get_by_role("dialog", name="Knowledge bases")
    dialog.get_by_label("Knowledge base", exact=True).select_option("handbook")
    runbook = (
        "# Vault runbook\n\n## Key rotation\n\n"
        "Vault keys are rotated every 90 days. Run `vault rotate --all` from the ops host, then "
        "restart the API pods so that they read the new keys.\n"
    )
    dialog.get_by_label(re.compile("Upload documents")).set_input_files(
        [FilePayload(name="vault-runbook.md", mimeType="text/markdown", buffer=runbook.encode())]
    )
    expect(dialog.locator("tr[data-document='vault-runbook.md'] .doc-status")).to_have_text("indexed")
    dialog.get_by_role("button", name="Close knowledge bases").click()
    choose_model(page, "smollm2")
    set_options(page, max_tokens=60)
    composer_menu(page, "Knowledge").click()
    page.get_by_label("handbook").check()
    composer_menu(page, "Knowledge (1)").click()
    ask(page, "How often are the vault keys rotated, and how?")
    wait_done(page)
    choose_model(page, "tool-caller")
    ask(page, 'call demo__add {"a": 40, "b": 2}')
    wait_done(page)
    page.locator("details.tool-card summary").last.click()
    page.get_by_label("Message").fill("Write a Python function that reverses a string.")
    path = SCREENSHOT if os.environ.get("KUBECHAT_SCREENSHOT") else tmp_path / SCREENSHOT.name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
