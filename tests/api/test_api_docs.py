"""/docs and /redoc load everything they need from the API itself: no CDN, so they work in an
air-gapped cluster. (tests/browser/test_api_docs.py renders them in Chromium with every request
to anywhere else refused.)"""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import InProcessApi

# What each asset must be, by the end of its name.
KINDS = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class References(HTMLParser):
    """Every URL a page makes the browser load: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if (url := found.get(name)) and tag in ("script", "link", "img"):
                self.urls.append(url)


@pytest.mark.parametrize(
    ("path", "needs"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_docs_pages_load_their_assets_from_the_api(api: InProcessApi, path: str, needs: str) -> None:
    page = api.client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no web fonts
    parser = References()
    parser.feed(page.text)
    assert any(url.endswith(needs) for url in parser.urls), parser.urls
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/docs/assets/"), url
        asset = api.client.get(url)
        assert asset.status_code == 200, url
        kind = next(kind for end, kind in KINDS.items() if url.endswith(end))
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url  # the real bundle, not a placeholder
    # Both read the schema the API publishes.
    assert "/openapi.json" in page.text
    assert api.client.get("/openapi.json").status_code == 200
    # And the browser may reach nothing else: a policy of this origin only (ReDoc's sidebar would
    # fetch Redocly's logo from a CDN), with Swagger UI's inline script allowed by its hash.
    directives = [d.partition(" ") for d in page.headers["content-security-policy"].split("; ")]
    policy = {name: value for name, _, value in directives}
    assert policy["default-src"] == policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data:" and "http" not in page.headers["content-security-policy"]
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    digests = {
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in inline
    }
    assert set(policy["script-src"].split()) == {"'self'", *digests}


def test_an_asset_that_is_not_there_is_the_api_404(api: InProcessApi) -> None:
    response = api.client.get("/docs/assets/nothing.js")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
