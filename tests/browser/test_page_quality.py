"""The page's quality bar: no serious accessibility violations (axe-core), light and dark, usable
375 px wide; and the README's screenshot, which this test makes (`make screenshot`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import FilePayload, Page, expect

from kubechat.embedded.tritonserver import TritonServer
from tests.browser.conftest import DEMO_MCP_SERVERS, OpenPage, axe_violations, tools_ready
from tests.browser.test_chat_page import ask, choose_model, composer_menu, set_options, wait_done
from tests.conftest import EXAMPLE_MODELS, ROOT, ApiProcess, api_env
from tests.polling import wait_until

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
    set_options(page, max_tokens=400)
    ask(page, "A long question that wraps over several lines on a narrow phone screen, " * 3)
    wait_done(page)
    # Nothing is wider than the screen; the chat list is one tap away; the transcript scrolls,
    # the composer stays in view.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.evaluate("document.body.scrollWidth") <= 375
    expect(page.get_by_label("Message")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollHeight") <= 740
    chats = page.get_by_role("navigation", name="Chats")
    expect(chats).not_to_be_visible()
    page.get_by_role("button", name="Chats").click()
    expect(chats).to_be_visible()
    chats.get_by_role("link", name="New chat").click()
    expect(chats).not_to_be_visible()
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()


@pytest.fixture
def fresh_api(triton: TritonServer, tmp_path: Path) -> Iterator[ApiProcess]:
    """`make serve`'s setup (local mode, the example knowledge base) with nothing in it yet, and
    the `demo` MCP server."""
    env = api_env(triton, EXAMPLE_MODELS, tmp_path)
    del env["KUBECHAT_API_KEYS"]
    env["KUBECHAT_KNOWLEDGE_BASES_DIR"] = str(ROOT / "examples" / "knowledge-bases")
    env["KUBECHAT_MCP_SERVERS"] = json.dumps(DEMO_MCP_SERVERS)
    process = ApiProcess(env, tmp_path / "api.log")
    process.start()
    wait_until(lambda: tools_ready(process), 60, "the demo MCP server's tools")
    yield process
    process.stop()


def test_the_screenshot(fresh_api: ApiProcess, open_page: OpenPage, tmp_path: Path) -> None:
    """The README's picture of the page; `make screenshot` (KUBECHAT_SCREENSHOT=1) writes it into docs."""
    with httpx.Client(base_url=fresh_api.url) as http:
        for title in ("Quarterly report summary", "Helm values for the GPU pool", "Why is my pod pending?"):
            http.post("/sessions", json={"title": title})
    page = open_page(fresh_api, key=None, viewport={"width": 1280, "height": 900}, color_scheme="light")
    page.get_by_role("button", name="Documents").click()
    dialog = page.get_by_role("dialog", name="Knowledge bases")
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

    choose_model(page, "tool-caller")
    ask(page, 'call demo__add {"a": 40, "b": 2}')
    wait_done(page)
    choose_model(page, "smollm2")
    set_options(page, max_tokens=100)
    ask(page, "Write a Python function that reverses a string.")
    wait_done(page)
    set_options(page, max_tokens=40)
    composer_menu(page, "Knowledge").click()
    page.get_by_label("Team documents").check()
    composer_menu(page, "Knowledge (1)").click()
    ask(page, "How often are the vault keys rotated?")
    wait_done(page)
    # The transcript scrolls under a composer that stays in view.
    expect(page.get_by_label("Message")).to_be_in_viewport()
    path = SCREENSHOT if os.environ.get("KUBECHAT_SCREENSHOT") else tmp_path / SCREENSHOT.name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
