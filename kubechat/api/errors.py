"""The one mapping of domain errors to the wire: an HTTP status, and the error body that HTTP
responses (`{"error": ErrorBody}`), WebSocket error events and SSE streams all carry.

Every error body sent is counted here by route template and stable code (kubechat_errors_total,
and kubechat_busy_refusals_total for `busy`)."""

from __future__ import annotations

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


# Status and OpenAI error type per class; a subclass not listed takes its nearest base's.
_HTTP: dict[type[e.KubechatError], tuple[int, str]] = {
    e.KubechatError: (500, "server_error"),
    e.InvalidRequestError: (400, "invalid_request_error"),
    e.MessageTooLargeError: (413, "invalid_request_error"),
    e.UnauthenticatedError: (401, "authentication_error"),
    e.ForbiddenError: (403, "permission_error"),
    e.SessionNotFoundError: (404, "invalid_request_error"),
    e.ModelNotFoundError: (404, "invalid_request_error"),
    e.BusyError: (409, "invalid_request_error"),
    e.ModelUnavailableError: (503, "server_error"),
    e.KnowledgeBaseNotFoundError: (404, "invalid_request_error"),
    e.DocumentNotFoundError: (404, "invalid_request_error"),
    e.KnowledgeBaseUnavailableError: (409, "invalid_request_error"),
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


def _mapped(exc: e.KubechatError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in _HTTP:
            return _HTTP[cls]
    raise AssertionError("KubechatError is mapped")  # pragma: no cover


def http_status(exc: e.KubechatError) -> int:
    return _mapped(exc)[0]


def record_error(code: str) -> None:
    """Count an error sent to a client, on the route being served."""
    route = current_route()
    metrics.ERRORS.labels(route, code).inc()
    if code == e.BusyError.code:
        metrics.BUSY_REFUSALS.labels(route).inc()


def error_body(exc: e.KubechatError) -> ErrorBody:
    """The body of an error sent to a client (counted: call it only to send one)."""
    record_error(exc.code)
    return ErrorBody(code=exc.code, message=exc.message, type=_mapped(exc)[1])


def error_response(exc: e.KubechatError) -> JSONResponse:
    """The HTTP response of a domain error (a 401 says which scheme to authenticate with)."""
    status = http_status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error_body(exc).model_dump()}, status_code=status, headers=headers)
