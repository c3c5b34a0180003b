"""The API serves the built page at / without shadowing any API route."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import ApiProcess, auth

pytestmark = pytest.mark.triton

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def test_the_page_and_its_assets_with_cache_headers(web_api: ApiProcess) -> None:
    page = httpx.get(f"{web_api.url}/", headers=HTML)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    scripts = re.findall(r'src="(/assets/[^"]+\.js)"', page.text)
    assert scripts, page.text
    asset = httpx.get(f"{web_api.url}{scripts[0]}")
    assert asset.status_code == 200
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in asset.headers["content-type"]
    # A conditional request for an unchanged asset costs no body.
    again = httpx.get(f"{web_api.url}{scripts[0]}", headers={"If-None-Match": asset.headers["etag"]})
    assert again.status_code == 304


def test_page_urls_fall_back_to_the_page(web_api: ApiProcess) -> None:
    for path in ("/chat/0123abcd", "/chat/x/", "/anything/else"):
        response = httpx.get(f"{web_api.url}{path}", headers=HTML)
        assert response.status_code == 200, path
        assert '<div id="root">' in response.text


@pytest.mark.parametrize(
    "path",
    ["/sessions/x/nothing", "/v1/nothing", "/knowledge-bases/handbook/nothing/here", "/ws/else",
     "/assets/gone.js", "/images/a/b/c"],
)  # fmt: skip
def test_unknown_api_paths_are_json_404s_even_for_browsers(web_api: ApiProcess, path: str) -> None:
    response = httpx.get(f"{web_api.url}{path}", headers={**HTML, **auth()})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_shadows_no_api_route(web_api: ApiProcess) -> None:
    assert httpx.get(f"{web_api.url}/health", headers=HTML).json() == {"status": "ok"}
    models = httpx.get(f"{web_api.url}/models", headers={**HTML, **auth()})
    assert models.status_code == 200 and isinstance(models.json()["items"], list)
    # Without the key the API's own 401, not the page.
    assert httpx.get(f"{web_api.url}/sessions", headers=HTML).json()["error"]["code"] == "unauthenticated"
    assert httpx.get(f"{web_api.url}/openapi.json").json()["info"]["title"] == "kubechat"
    assert "swagger" in httpx.get(f"{web_api.url}/docs", headers=HTML).text.lower()
    # A known path with another method keeps its 405; an unknown one is a JSON 404.
    assert httpx.put(f"{web_api.url}/sessions", headers=auth()).status_code == 405
    assert httpx.post(f"{web_api.url}/nothing", headers=auth()).json()["error"]["code"] == "not_found"
    # Non-HTML clients (curl, scripts) get JSON for unknown paths, never the page.
    assert httpx.get(f"{web_api.url}/nothing", headers={"Accept": "application/json"}).status_code == 404
