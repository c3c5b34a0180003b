"""The chat page's serving rules (kubechat/api/web.py) without a browser: a build in a folder of
the test's own, and no build at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubechat.api.app import create_app
from kubechat.api.settings import Settings

HTML = {"Accept": "text/html"}


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<!doctype html><div id="root"></div>')
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    return tmp_path


def client(web_dir: Path) -> TestClient:
    # No lifespan: only routes that need no services are reached.
    return TestClient(create_app(Settings(web_dir=web_dir, api_keys=None)))


def test_index_and_assets_have_their_cache_rules(built: Path) -> None:
    http = client(built)
    index = http.get("/", headers=HTML)
    assert (index.status_code, index.headers["cache-control"]) == (200, "no-cache")
    assert "frame-ancestors 'none'" in index.headers["content-security-policy"]
    asset = http.get("/assets/index-abc123.js")
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert http.get("/favicon.svg").headers["cache-control"] == "no-cache"
    assert http.head("/assets/index-abc123.js").status_code == 200


def test_page_paths_get_the_page_and_api_paths_never_do(built: Path) -> None:
    http = client(built)
    assert http.get("/chat/abc", headers=HTML).text.startswith("<!doctype html>")
    for path in ("/sessions/abc/else", "/v1/else", "/assets/missing.js", "/mcp/x", "/ws/chat"):
        response = http.get(path, headers=HTML)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    # Non-HTML clients get JSON, and only GET and HEAD read the page.
    assert http.get("/chat/abc", headers={"Accept": "application/json"}).status_code == 404
    assert http.post("/chat/abc", headers=HTML).status_code == 404
    assert http.get("/health", headers=HTML).json() == {"status": "ok"}


def test_paths_cannot_leave_the_build(built: Path) -> None:
    (built.parent / "secret.txt").write_text("no")
    http = client(built)
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt"):
        response = http.get(path)
        assert response.text != "no", path


def test_without_a_build_the_api_serves_and_says_how_to_build(tmp_path: Path) -> None:
    http = client(tmp_path / "missing")
    page = http.get("/", headers=HTML)
    assert page.status_code == 200 and "make install" in page.text
    assert http.get("/chat/abc", headers=HTML).status_code == 200
    assert http.get("/assets/x.js").status_code == 404
    assert http.get("/health").json() == {"status": "ok"}
