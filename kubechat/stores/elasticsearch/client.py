"""Talking to Elasticsearch: one client factory, one retry policy, one error mapping.

The chunk store and the document catalog both use these, so every Elasticsearch request of
kubechat retries the same way (the client's own transport retries are switched off) and
fails with the same StoreError types.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from elasticsearch import AsyncElasticsearch
from elasticsearch.exceptions import ApiError, ConnectionError, ConnectionTimeout, TransportError

from kubechat.stores.errors import StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

TRANSIENT_STATUS: Final = frozenset({429, 502, 503, 504})
MAX_BACKOFF_S: Final = 30.0

T = TypeVar("T")


class RequestFailed(StoreError):
    """An Elasticsearch request failed for good; callers may look at what came back."""

    def __init__(self, message: str, status: int, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def error_type_and_reason(body: object) -> tuple[str, str]:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return str(error.get("type", "")), str(error.get("reason", ""))
        if isinstance(error, str):
            return "", error
    return "", ""


def describe(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        error_type, reason = error_type_and_reason(exc.body)
        return " ".join(filter(None, [str(exc.meta.status), error_type, reason])) or str(exc.meta.status)
    return f"{type(exc).__name__}: {exc}"


class RetryPolicy:
    """Exponential back-off with jitter over transient failures; every failure a StoreError."""

    def __init__(self, max_retries: int = 4, backoff_s: float = 0.5) -> None:
        if max_retries < 0 or backoff_s < 0:
            raise ValueError("max_retries and backoff_s must be >= 0")
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def delay(self, attempt: int) -> float:
        # Exponential with jitter, so that replicas turned away together do not return together.
        return min(self.backoff_s * 2.0**attempt, MAX_BACKOFF_S) * random.uniform(0.5, 1.0)

    async def call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one request, retrying transient failures; every failure becomes a StoreError."""
        for attempt in range(self.max_retries + 1):
            try:
                return await request()
            except (ApiError, TransportError) as exc:
                if not transient(exc):
                    raise failure(what, exc) from exc
                if attempt == self.max_retries:
                    raise StoreUnavailableError(
                        f"{what} failed after {attempt + 1} attempts: {describe(exc)}"
                    ) from exc
                logger.warning("%s: %s; retrying", what, describe(exc))
            await asyncio.sleep(self.delay(attempt))
        raise AssertionError("unreachable")


def transient(exc: ApiError | TransportError) -> bool:
    if isinstance(exc, ApiError):
        return exc.meta.status in TRANSIENT_STATUS
    return isinstance(exc, ConnectionError | ConnectionTimeout)


def failure(what: str, exc: ApiError | TransportError) -> StoreError:
    if isinstance(exc, ApiError):
        error_type, _ = error_type_and_reason(exc.body)
        message = f"{what}: {describe(exc)}"
        if exc.meta.status >= 500:
            return StoreUnavailableError(message)
        return RequestFailed(message, exc.meta.status, error_type)
    if isinstance(exc, ConnectionError):  # TLS failures
        return StoreUnavailableError(f"{what}: {describe(exc)}")
    return StoreError(f"{what}: {describe(exc)}")


def new_client(
    url: str,
    *,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_certs: str | None = None,
    request_timeout: float = 30.0,
) -> AsyncElasticsearch:
    """A client of the cluster at `url` (credentials are never logged).

    Empty strings count as not given, as unset environment settings arrive that way.
    """
    api_key, username, password = api_key or None, username or None, password or None
    ca_certs = ca_certs or None
    if api_key is not None and username is not None:
        raise ValueError("give an API key or a username and password, not both")
    if (username is None) != (password is None):
        raise ValueError("a username needs a password and a password a username")
    options: dict[str, Any] = {}
    if ca_certs is not None:
        options["ca_certs"] = ca_certs
    return AsyncElasticsearch(
        url,
        api_key=api_key,
        basic_auth=(username, password) if username is not None and password is not None else None,
        request_timeout=request_timeout,
        max_retries=0,  # RetryPolicy retries, with back-off
        **options,
    )
