"""Swagger UI and ReDoc render the API's operations in Chromium with no network: every request
to anything but the API is refused and recorded, and none may be made (the pages' policy stops
ReDoc's request for Redocly's logo before it leaves the browser)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Route, expect

from tests.browser.conftest import TIMEOUT_MS
from tests.conftest import ApiProcess

pytestmark = pytest.mark.triton


class Offline:
    """A browser context that can reach the API and nothing else."""

    def __init__(self, browser: Browser, api: ApiProcess) -> None:
        self.api = api
        self.refused: list[str] = []
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 860})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.route("**/*", self.route)

    def route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.api.url + "/") or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort("internetdisconnected")


@pytest.fixture
def offline(browser: Browser, web_api: ApiProcess) -> Iterator[Offline]:
    context = Offline(browser, web_api)
    yield context
    context.context.close()


def operations(api: ApiProcess) -> int:
    schema = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    methods = {"get", "put", "post", "delete", "patch"}
    return sum(1 for ops in schema["paths"].values() for method in ops if method in methods)


def test_swagger_ui_renders_every_operation_offline(offline: Offline) -> None:
    page = offline.context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{offline.api.url}/docs")

    blocks = page.locator(".opblock")
    expect(blocks.first).to_be_visible()
    expect(blocks).to_have_count(operations(offline.api))
    expect(page.locator(".opblock-summary-path", has_text="/knowledge-bases/{name}/search")).to_be_visible()
    assert offline.refused == [] and errors == []


def test_redoc_renders_offline(offline: Offline) -> None:
    page = offline.context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{offline.api.url}/redoc")

    expect(page.locator("h1", has_text="kubechat")).to_be_visible()
    # Each operation has a button naming its method and path ("get /images/{image_id}").
    endpoints = page.get_by_role("button", name=re.compile(r"^(get|put|post|delete|patch) \S"))
    expect(endpoints).to_have_count(operations(offline.api))
    assert offline.refused == [] and errors == []
