"""The one mapping of errors to the wire: an HTTP status, and the error body that HTTP
responses (`{"error": ErrorBody}`), WebSocket error events and SSE streams all carry.

Domain errors (kubechat.core.errors) map by class. The errors the HTTP layer answers itself,
before or around a route (an unknown path, a method a path does not have, a body that is not
JSON, an unexpected exception) map by status (`status_error_response`). `error_responses`
documents both in the OpenAPI schema, so that generated clients know every error's shape.

Every error body sent is counted here by route template and stable code (kubechat_errors_total,
and kubechat_busy_refusals_total for `busy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse

from kubechat.api.observability import current_route
from kubechat.core import errors as e
from kubechat.core import metrics


class ErrorBody(BaseModel):
    """The one error shape: HTTP bodies are `{"error": ErrorBody}`, WS events carry it too."""

    code: str
    message: str
    type: str = "invalid_request_error"  # OpenAI clients read error.type


class ErrorResponse(BaseModel):
    """The body of every HTTP error response."""

    error: ErrorBody


# Status and OpenAI error type per class; a subclass not listed takes its nearest base's.
_HTTP: dict[type[e.KubechatError], tuple[int, str]] = {
    e.KubechatError: (500, "server_error"),
    e.InternalError: (500, "server_error"),
    e.InvalidRequestError: (400, "invalid_request_error"),
    e.MessageTooLargeError: (413, "invalid_request_error"),
    e.UnauthenticatedError: (401, "authentication_error"),
    e.ForbiddenError: (403, "permission_error"),
    e.SessionNotFoundError: (404, "invalid_request_error"),
    e.ModelNotFoundError: (404, "invalid_request_error"),
    e.BusyError: (409, "invalid_request_error"),
    e.ModelUnavailableError: (503, "server_error"),
    # A remote endpoint's answers: a gateway that got an unusable answer upstream.
    e.UpstreamAuthError: (502, "server_error"),
    e.UpstreamModelNotFoundError: (502, "server_error"),
    e.UpstreamRateLimitedError: (429, "rate_limit_error"),
    e.UpstreamRejectedError: (502, "server_error"),
    e.KnowledgeBaseNotFoundError: (404, "invalid_request_error"),
    e.DocumentNotFoundError: (404, "invalid_request_error"),
    e.KnowledgeBaseUnavailableError: (409, "invalid_request_error"),
    # The embedding model's vector, not the client's input: an upstream answer that cannot be used.
    e.InvalidVectorError: (502, "server_error"),
    e.DocumentTooLargeError: (413, "invalid_request_error"),
    e.LengthRequiredError: (411, "invalid_request_error"),
    e.DecompressionBombError: (413, "invalid_request_error"),
    e.UnsupportedDocumentTypeError: (415, "invalid_request_error"),
    e.EmptyDocumentError: (400, "invalid_request_error"),
    e.StorageUnavailableError: (503, "server_error"),
    e.UnsupportedImageError: (415, "invalid_request_error"),
    e.ImageTooLargeError: (413, "invalid_request_error"),
    e.CorruptImageError: (400, "invalid_request_error"),
    e.ImageNotFoundError: (404, "invalid_request_error"),
    e.ToolRoundsExceededError: (502, "server_error"),
}

# Errors answered by status, with no domain error behind them: the request never reached a
# route (no route has its path, or none has its method) or its body could not be read. A
# request that fails validation is 422 `invalid_request`.
HTTP_CODES: dict[int, str] = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
}


def _mapped(cls: type[e.KubechatError]) -> tuple[int, str]:
    for base in cls.__mro__:
        if base in _HTTP:
            return _HTTP[base]
    raise AssertionError("KubechatError is mapped")  # pragma: no cover


def http_status(exc: e.KubechatError) -> int:
    return _mapped(type(exc))[0]


def record_error(code: str) -> None:
    """Count an error sent to a client, on the route being served."""
    route = current_route()
    metrics.ERRORS.labels(route, code).inc()
    if code == e.BusyError.code:
        metrics.BUSY_REFUSALS.labels(route).inc()


def error_body(exc: e.KubechatError) -> ErrorBody:
    """The body of an error sent to a client (counted: call it only to send one)."""
    record_error(exc.code)
    return ErrorBody(code=exc.code, message=exc.message, type=_mapped(type(exc))[1])


def error_response(exc: e.KubechatError) -> JSONResponse:
    """The HTTP response of a domain error (a 401 says which scheme to authenticate with)."""
    status = http_status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error_body(exc).model_dump()}, status_code=status, headers=headers)


def status_error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The response of an error the HTTP layer answers by status (see HTTP_CODES)."""
    code = HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    record_error(code)
    body = ErrorBody(
        code=code, message=message, type="invalid_request_error" if status < 500 else "server_error"
    )
    return JSONResponse({"error": body.model_dump()}, status_code=status, headers=dict(headers or {}))


def error_responses(*errors: type[e.KubechatError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that may raise `errors`: each status with the error
    model and the codes it carries. Every route may also answer 422 (its request does not
    validate) and 500 (an unexpected failure); a route that takes no input is documented with
    them too, as FastAPI cannot tell."""
    codes: dict[int, set[str]] = {422: {HTTP_CODES[422]}, 500: {HTTP_CODES[500]}}
    for cls in errors:
        codes.setdefault(_mapped(cls)[0], set()).add(cls.code)
    return {
        status: {"model": ErrorResponse, "description": "Error codes: " + ", ".join(sorted(found)) + "."}
        for status, found in sorted(codes.items())
    }
