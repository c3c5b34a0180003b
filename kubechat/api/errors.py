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

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse

from kubechat.api.observability import current_route
from kubechat.core import errors as e
from kubechat.core import metrics


class ErrorBody(BaseModel):
    """The one error shape: HTTP bodies are `{"error": ErrorBody}`, WS events carry it too.

    It is OpenAI's error object (`message`, `type`, `param`, `code`), which OpenAI clients parse
    into their exceptions: `code` is kubechat's stable code, `param` the request field at fault.
    """

    code: str
    message: str
    type: str = "invalid_request_error"  # OpenAI clients read error.type
    param: str | None = None


class ErrorResponse(BaseModel):
    """The body of every HTTP error response."""

    error: ErrorBody


# Status and OpenAI error type per class; a subclass not listed takes its nearest base's.
_HTTP: dict[type[e.KubechatError], tuple[int, str]] = {
    e.KubechatError: (500, "server_error"),
    e.InternalError: (500, "server_error"),
    e.InvalidRequestError: (400, "invalid_request_error"),
    e.UnsupportedParameterError: (400, "invalid_request_error"),
    e.UnsupportedValueError: (400, "invalid_request_error"),
    e.MessageTooLargeError: (413, "invalid_request_error"),
    e.UnauthenticatedError: (401, "authentication_error"),
    e.ForbiddenError: (403, "permission_error"),
    e.SessionNotFoundError: (404, "invalid_request_error"),
    e.ModelNotFoundError: (404, "invalid_request_error"),
    e.BusyError: (409, "invalid_request_error"),
    e.ModelUnavailableError: (503, "server_error"),
    # A model's full queue: refused at once, to be retried shortly (with Retry-After).
    e.ModelBusyError: (429, "rate_limit_error"),
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


# Seconds a client refused for a model's full queue waits before retrying (one generation step
# frees a slot; a second lets a few finish).
BUSY_RETRY_AFTER_S = 1


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
    return ErrorBody(code=exc.code, message=exc.message, type=_mapped(type(exc))[1], param=exc.param)


def error_response(exc: e.KubechatError) -> JSONResponse:
    """The HTTP response of a domain error (a 401 says which scheme to authenticate with)."""
    status = http_status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, e.ModelBusyError):
        headers = {"Retry-After": str(BUSY_RETRY_AFTER_S)}
    return JSONResponse({"error": error_body(exc).model_dump()}, status_code=status, headers=headers)


def status_error_response(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The response of an error the HTTP layer answers by status (see HTTP_CODES)."""
    code = code or HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    record_error(code)
    body = ErrorBody(
        code=code,
        message=message,
        type="invalid_request_error" if status < 500 else "server_error",
        param=param,
    )
    return JSONResponse({"error": body.model_dump()}, status_code=status, headers=dict(headers or {}))


# A request field nobody implements: OpenAI's "Unrecognized request argument supplied".
UNKNOWN_PARAMETER = "unknown_parameter"


def validation_error_response(errors: Sequence[Any], status: int = 422) -> JSONResponse:
    """The response of a request that does not validate (FastAPI's RequestValidationError's
    `errors()`), about its first error: `param` is the field (`messages[0].content`), as
    OpenAI names it. `status` is 422, or 400 under /v1, where OpenAI clients expect it."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    location = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = _param_name(location) or None
    if first.get("type") == "json_invalid":
        context = first.get("ctx")
        reason = context.get("error", first["msg"]) if isinstance(context, dict) else first["msg"]
        return status_error_response(status, f"the body is not valid JSON: {reason}")
    if first.get("type") == "extra_forbidden":
        return status_error_response(
            status, f"Unrecognized request argument supplied: {param}", code=UNKNOWN_PARAMETER, param=param
        )
    return status_error_response(status, f"{param or 'body'}: {first['msg']}", param=param)


# Request fields are snake_case identifiers; union tags have brackets, dashes or capitals.
_UNION_TAG = re.compile(r"[^a-z0-9_]")
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "dict", "list", "none"})


def _param_name(location: Sequence[object]) -> str:
    """A pydantic error location as a field path: ("messages", 0, "content") is
    `messages[0].content`. The tags pydantic adds for the members of a union ("str",
    "list[constrained-str]", a model's class name) are not fields and are left out."""
    name = ""
    for part in location:
        if (isinstance(part, str) and _UNION_TAG.search(part)) or part in _TYPE_TAGS:
            continue
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name


def error_responses(
    *errors: type[e.KubechatError], validation_status: int = 422
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that may raise `errors`: each status with the error
    model and the codes it carries. Every route may also answer `validation_status` (its request
    does not validate: 422, or 400 under /v1 as OpenAI answers) and 500 (an unexpected failure);
    a route that takes no input is documented with them too, as FastAPI cannot tell."""
    codes: dict[int, set[str]] = {validation_status: {HTTP_CODES[422]}, 500: {HTTP_CODES[500]}}
    if validation_status == 400:
        codes[400].add(UNKNOWN_PARAMETER)
    for cls in errors:
        codes.setdefault(_mapped(cls)[0], set()).add(cls.code)
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": "Error codes: " + ", ".join(sorted(found)) + "."}
        for status, found in sorted(codes.items())
    }
    if validation_status != 422:
        # FastAPI documents a 422 of its own model on every route with input unless a 422, a
        # 4XX or a `default` response is; `default` says the truth: any other error, same shape.
        responses["default"] = {"model": ErrorResponse, "description": "Any other error, in the same shape."}
    return responses
