"""The chat page in a real browser: Debian's Chromium driven by Playwright, against the API as a
real process on the session's tritonserver (real models).

Playwright cannot download its own browsers here; it drives /usr/bin/chromium (`apt-get install
chromium`, as .ci/run does). The page must be built (`make install` runs npm ci and npm run build).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from kubechat.api.web import BUILT_PAGE
from kubechat.embedded.tritonserver import TritonServer
from tests.conftest import ALICE_KEY, EXAMPLE_MODELS, ROOT, ApiProcess, api_env
from tests.polling import wait_until

CHROMIUM = Path(os.environ.get("KUBECHAT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 860}
TIMEOUT_MS = 120_000  # answers from the CPU models on a busy 2-core machine
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
# The MCP server of the tool tests (tests/mcp_servers), over stdio: add, echo, fail, slow, grow.
DEMO_MCP_SERVERS = [
    {"name": "demo", "transport": "stdio", "command": sys.executable,
     "args": ["-m", "tests.mcp_servers.stdio_server"], "cwd": str(ROOT)},
]  # fmt: skip
expect.set_options(timeout=TIMEOUT_MS)


# Module scope, not session: while Playwright's sync API is open its event loop counts as running
# in this thread, and pytest-asyncio could not run the async tests of the other directories.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (as .ci/run does)")
    if not (BUILT_PAGE / "index.html").is_file():
        pytest.fail(f"the chat page is not built ({BUILT_PAGE}): run `make install`")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def web_api(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The API with API keys (alice, bob), the test knowledge bases and the `demo` MCP server, in a
    state folder of its own (the page's sessions and uploads do not meet the integration tests')."""
    state = tmp_path_factory.mktemp("web-state")
    env = {**api_env(triton, EXAMPLE_MODELS, state), "KUBECHAT_MCP_SERVERS": json.dumps(DEMO_MCP_SERVERS)}
    process = ApiProcess(env, state / "api.log")
    process.start()
    wait_until(lambda: tools_ready(process), 60, "the demo MCP server's tools")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def local_api(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The API in local mode (no API keys), as `make serve` runs it."""
    state = tmp_path_factory.mktemp("web-local-state")
    env = api_env(triton, EXAMPLE_MODELS, state)
    del env["KUBECHAT_API_KEYS"]
    process = ApiProcess(env, state / "api.log")
    process.start()
    yield process
    process.stop()


def tools_ready(api: ApiProcess) -> bool:
    servers = httpx.get(f"{api.url}/ready", timeout=5).json().get("mcp_servers", {})
    return bool(servers) and all(s.get("connected") for s in servers.values())


class PageProblems:
    """What went wrong inside the page: uncaught errors, console errors (CSP violations too)."""

    def __init__(self, allowed: str | None) -> None:
        self.errors: list[str] = []
        # A refused key is a 401 the page expects and handles; the browser logs it anyway.
        self.allowed = re.compile("401" + (f"|{allowed}" if allowed else ""))

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not self.allowed.search(message.text):
            self.errors.append(f"console: {message.text}")

    def page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """Opens the page in a fresh browser context (its own sessionStorage), signed in with `key`
    (None: nothing stored, as a first visit). Fails the test on any error inside the page but the
    console errors `allow_console` (a regular expression) expects."""
    contexts: list[tuple[BrowserContext, PageProblems]] = []

    def open_(
        api: ApiProcess,
        path: str = "/",
        key: str | None = ALICE_KEY,
        allow_console: str | None = None,
        **context: Any,
    ) -> Page:
        ctx = browser.new_context(viewport=context.pop("viewport", DESKTOP), **context)
        ctx.set_default_timeout(TIMEOUT_MS)
        if key is not None:
            ctx.add_init_script(f"sessionStorage.setItem('kubechat.apiKey', {json.dumps(key)})")
        problems = PageProblems(allow_console)
        contexts.append((ctx, problems))
        page = ctx.new_page()
        page.on("console", problems.console)
        page.on("pageerror", problems.page_error)
        page.goto(api.url + path)
        return page

    yield open_
    found = [e for _, problems in contexts for e in problems.errors]
    for ctx, _ in contexts:
        ctx.close()
    assert not found, "errors inside the page:\n" + "\n".join(found)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core (from web/node_modules) run in the page: the serious and critical violations."""
    # Evaluated, not added as a <script>: the page's Content-Security-Policy refuses inline scripts.
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [v for v in result if v["impact"] in ("serious", "critical")]
