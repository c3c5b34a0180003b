"""The route class of every API router: request bodies are strict JSON.

FastAPI reads a JSON body with Python's `json.loads`, which accepts what JSON (RFC 8259) does
not: lone surrogates (`"\\ud800"`, or their bytes in a body that is not UTF-8), `NaN` and
`Infinity`, UTF-16 and UTF-32 bodies. A lone surrogate then travels as far as the first
`str.encode("utf-8")` (the prompt sent to Triton, a store) and fails there as a 500. With this
route class a body is parsed by pydantic's JSON parser, which refuses all of these, so such a
body is answered like any other that is not JSON: 422 `invalid_request`. The WebSocket's frames
are parsed by the same parser (kubechat.api.routers.chat_socket).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

UTF8_BOM = b"\xef\xbb\xbf"


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            # RFC 8259 lets a parser ignore a byte order mark; clients that add one get that.
            body = body.removeprefix(UTF8_BOM)
            try:
                self._json = pydantic_core.from_json(body, allow_inf_nan=False)
            except ValueError as exc:
                # FastAPI answers this error as a body that is not JSON (a validation error).
                raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace"), 0) from None
        return self._json


class ApiRoute(APIRoute):
    """An APIRoute whose endpoint receives a StrictJsonRequest (FastAPI's documented way to
    change how a route reads its request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json
