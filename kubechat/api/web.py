"""The chat page: the built web app (web/, `make install`) served at `/` by the API itself.

It is the router's fallback, not a route: Starlette calls it only for requests that no API route
matches, not even by path with another method (those still get their 405), so the page can
never shadow an API route. What it answers:

* `/assets/*`: Vite's content-hashed files, cacheable for a year (`immutable`);
* other files at the top of the build (favicon): revalidated on every use;
* any other GET that asks for HTML and is not under an API prefix: `index.html` (the SPA
  fallback: `/chat/<session>` reloads into the page, which routes on the client), never cached,
  so a new deployment's page is picked up at once;
* everything else: the one JSON error shape, `404 not_found`.

Without a build (a checkout where npm never ran) the API serves as before, and `/` says how to
build the page.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from kubechat.api.errors import status_error_response

logger = logging.getLogger(__name__)

# Where `npm run build` in web/ writes the page (vite.config.ts); shipped inside the package.
BUILT_PAGE = Path(__file__).resolve().parent / "static"

# First path segments that belong to the API (or FastAPI's docs): an unknown path under one of
# them is an API 404, never the page, even when a browser asks for it.
API_PREFIXES = frozenset(
    {
        "health", "ready", "models", "sessions", "knowledge-bases", "images", "v1", "ws", "mcp",
        "docs", "redoc", "openapi.json", "metrics", "api",
    }
)  # fmt: skip

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The page loads only its own scripts and styles and talks only to its own origin; images are
# the principal's thumbnails (blob: URLs made from authenticated fetches).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kubechat</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>kubechat</h1>
<p>The API is running, but the chat page has not been built.</p>
<p>Build it with <code>make install</code> (which runs <code>npm ci</code> and <code>npm run build</code>
in <code>web/</code>; Node.js 20 and npm are needed), then reload this page.</p>
<p>The API itself works without it: see <a href="/docs">/docs</a>.</p>
</body></html>
"""


def _not_found(path: str) -> JSONResponse:
    # The same answer as every error the HTTP layer gives by status (kubechat.api.errors).
    return status_error_response(404, f"no route {path}")


class ChatPage:
    """The router's fallback: the built page's files, index.html for page URLs, else a JSON 404."""

    def __init__(self, folder: Path, fallback: Router) -> None:
        self.folder = folder
        self.files = StaticFiles(directory=folder, check_dir=False)
        self.not_found = fallback.not_found  # what websockets to unknown paths still get

    @property
    def built(self) -> bool:
        return (self.folder / "index.html").is_file()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.not_found(scope, receive, send)
            return
        request = Request(scope)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        path = request.url.path
        if request.method not in ("GET", "HEAD"):
            return _not_found(path)
        relative = posixpath.normpath(path).lstrip("/")
        relative = "" if relative == "." else relative
        first = relative.split("/", 1)[0]
        if first in API_PREFIXES:
            return _not_found(path)
        if not self.built:
            if relative in ("", "index.html") or _wants_html(request):
                return HTMLResponse(NOT_BUILT, headers={"Cache-Control": REVALIDATE})
            return _not_found(path)
        if relative and relative != "index.html":
            static = await self._file(relative, request)
            if static is not None:
                cache = IMMUTABLE if first == "assets" else REVALIDATE
                static.headers["Cache-Control"] = cache
                static.headers.update(SECURITY_HEADERS)
                return static
            # A missing hashed asset is an old page asking for a file a redeploy removed: a 404,
            # not HTML that the browser would try to run as a script.
            if first == "assets" or not _wants_html(request):
                return _not_found(path)
        page = await self._file("index.html", request)
        if page is None:  # removed between the check and now
            return _not_found(path)
        page.headers["Cache-Control"] = REVALIDATE
        page.headers.update(SECURITY_HEADERS)
        return page

    async def _file(self, relative: str, request: Request) -> Response | None:
        try:
            return await self.files.get_response(relative, request.scope)
        except HTTPException:
            return None


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def serve_chat_page(router: Router, folder: Path | None) -> ChatPage:
    """Make the chat page the router's fallback (after every route, so it shadows none)."""
    page = ChatPage(folder or BUILT_PAGE, router)
    if not page.built:
        logger.warning(
            "the chat page is not built (%s has no index.html): `make install` builds it", page.folder
        )
    router.default = page
    return page
