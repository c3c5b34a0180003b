"""Talking to Elasticsearch: the one client factory, retry path, bulk path and error mapping.

The chunk store, the document catalog and the chat history all send their requests through
these, so every Elasticsearch request of kubechat is retried the same way and fails with the
same StoreError types:

* One client per process: `new_client` makes it where the process starts
  (kubechat.stores.open), the stores share it and never close it.
* Retries are tenacity's, not the transport's (switched off: it retries 429/502/503/504 at once,
  without back-off). A request that fails with 429/502/503/504, a timeout or a lost connection
  is tried again after an exponential back-off with full jitter, so that replicas turned away
  together do not come back together; when the attempts run out it is StoreUnavailableError.
  Anything else fails at once: RequestFailed (with the status and Elasticsearch's error type)
  for a 4xx, StoreUnavailableError for another 5xx, StoreError otherwise.
* Bulk writes go through `bulk`, which sends again only the items turned away (429/502/503/504)
  on the same back-off, and reports the items that failed for good.
* A request that fails in part (bulk items, by-query failures) becomes one error through
  `partial_failure`: StoreUnavailableError when every part was turned away or failed inside
  the cluster (5xx), else StoreError.
* `check_server` asks the cluster its version once, where a process opens its client: the
  client of one major speaks only to servers of that major (its requests ask for compatibility
  with it, which an older server refuses with `media_type_header_exception`), so any other is
  UnsupportedServerError with a reason a person can act on, not a failure of every request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from elasticsearch import AsyncElasticsearch
from elasticsearch._version import __versionstr__ as CLIENT_VERSION
from elasticsearch.exceptions import (
    ApiError,
    ConnectionError,
    ConnectionTimeout,
    TransportError,
    UnsupportedProductError,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.retry import RetryBaseT

from kubechat.stores.errors import StoreError, StoreUnavailableError, UnsupportedServerError

logger = logging.getLogger(__name__)

TRANSIENT_STATUS: Final = frozenset({429, 502, 503, 504})
MAX_BACKOFF_S: Final = 30.0
# Failed parts named in an error message; the rest are only counted.
_PARTS_SHOWN: Final = 3

T = TypeVar("T")


class RequestFailed(StoreError):
    """An Elasticsearch request failed for good; callers may look at what came back."""

    def __init__(self, message: str, status: int, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


@dataclass(frozen=True)
class PartFailure:
    """One part of a request that failed: a bulk item, or an entry a by-query request could not change."""

    key: str
    status: int
    error_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.status} {self.error_type}: {self.reason}"

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUS


class _ItemsTurnedAway(Exception):
    """Every failed item of a bulk request was turned away: send those again."""

    def __init__(self, failures: list[PartFailure]) -> None:
        super().__init__(f"{len(failures)} items turned away, first: {failures[0]}")
        self.failures = failures


def error_type_and_reason(body: object) -> tuple[str, str]:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return str(error.get("type", "")), str(error.get("reason", ""))
        if isinstance(error, str):
            return "", error
    return "", ""


def _cause(body: object) -> tuple[str, str]:
    """Type and reason of the innermost `caused_by` of an error answer, where Elasticsearch puts
    the specific reason ("all shards failed" is caused by what the shards failed with)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    cause: Mapping[str, Any] = {}
    while isinstance(error, Mapping) and isinstance(error.get("caused_by"), Mapping):
        error = cause = error["caused_by"]
    return str(cause.get("type", "")), str(cause.get("reason", ""))


def describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        error_type, reason = error_type_and_reason(exc.body)
        text = " ".join(filter(None, [str(exc.meta.status), error_type, reason])) or str(exc.meta.status)
        cause_type, cause_reason = _cause(exc.body)
        if cause_reason and cause_reason not in text:
            text += f" (caused by {cause_type}: {cause_reason})"
        return text
    if isinstance(exc, _ItemsTurnedAway):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.meta.status in TRANSIENT_STATUS
    return isinstance(exc, ConnectionError | ConnectionTimeout | _ItemsTurnedAway)


def request_failure(what: str, exc: ApiError | TransportError) -> StoreError:
    """The StoreError of a request that failed in a way a retry does not fix."""
    if isinstance(exc, ApiError):
        error_type, _ = error_type_and_reason(exc.body)
        message = f"{what}: {describe(exc)}"
        if exc.meta.status >= 500:
            return StoreUnavailableError(message)
        return RequestFailed(message, exc.meta.status, error_type)
    return StoreError(f"{what}: {describe(exc)}")


def partial_failure(what: str, failures: Sequence[PartFailure], total: int, noun: str) -> StoreError:
    """The one error of a request that failed in part (`failures` of `total` parts, not empty)."""
    shown = "; ".join(str(failure) for failure in failures[:_PARTS_SHOWN])
    message = f"{what}: {len(failures)} of {total} {noun} failed: {shown}"
    if all(failure.transient or failure.status >= 500 for failure in failures):
        return StoreUnavailableError(message)
    return StoreError(message)


def check_by_query(what: str, body: Mapping[str, Any], noun: str) -> None:
    """Raise the error of a `_delete_by_query` or `_update_by_query` answer that lists failures."""
    listed: Sequence[Mapping[str, Any]] = body.get("failures") or []
    failures = [
        PartFailure(
            str(failure.get("id") or failure.get("index") or "?"),
            int(failure.get("status", 500)),
            # A failed write carries a `cause`, a failed search a `reason`.
            *error_type_and_reason({"error": failure.get("cause") or failure.get("reason")}),
        )
        for failure in listed
    ]
    if failures:
        raise partial_failure(what, failures, max(int(body.get("total") or 0), len(failures)), noun)


@dataclass(frozen=True)
class Retries:
    """How a store retries: up to `max_retries` more attempts, waiting a random time of up to
    `backoff_s`, then twice that, and so on (up to MAX_BACKOFF_S) before each."""

    max_retries: int = 4
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError("max_retries and backoff_s must be >= 0")

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    async def _run(self, request: Callable[[], Awaitable[T]], retry: RetryBaseT, **options: Any) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=self.backoff_s, max=MAX_BACKOFF_S),
            retry=retry,
            reraise=True,
            **options,
        )

        # tenacity awaits what a coroutine function returns, not what any callable does.
        async def attempt() -> T:
            return await request()

        result: T = await retrying(attempt)
        return result

    async def call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one request, retrying transient failures; every failure becomes a StoreError."""

        def log(state: RetryCallState) -> None:
            if state.outcome is not None and (exc := state.outcome.exception()) is not None:
                logger.warning("%s: %s; retrying", what, describe(exc))

        try:
            return await self._run(request, retry_if_exception(_retryable), before_sleep=log)
        except (ApiError, TransportError) as exc:
            if _retryable(exc):
                raise StoreUnavailableError(
                    f"{what} failed after {self.attempts} attempts: {describe(exc)}"
                ) from exc
            raise request_failure(what, exc) from exc

    async def poll(self, attempt: Callable[[], Awaitable[T | None]]) -> T | None:
        """Run `attempt` until it returns something, backing off in between; None if it never did."""
        return await self._run(attempt, retry_if_result(_is_none), retry_error_callback=_none)


def _is_none(result: object) -> bool:
    return result is None


def _none(_: RetryCallState) -> None:
    return None


DEFAULT_RETRIES: Final = Retries()
# For requests not worth repeating: a readiness probe must answer quickly.
ONCE: Final = Retries(max_retries=0)


@dataclass(frozen=True)
class BulkAction:
    """One write of a `_bulk` request: `op` (index, create) of the entry `key`."""

    op: str
    key: str
    source: Mapping[str, Any]
    index: str | None = None  # None: the index the request names

    def lines(self) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        target = {"_id": self.key} if self.index is None else {"_index": self.index, "_id": self.key}
        return {self.op: target}, self.source


async def bulk(
    es: AsyncElasticsearch,
    what: str,
    actions: Sequence[BulkAction],
    retries: Retries,
    *,
    done_status: Collection[int] = (),
    **params: Any,
) -> list[PartFailure]:
    """Write `actions` in one `_bulk` request; the items that failed for good (none: all done).

    A whole request turned away is sent again, and so are the items turned away while every
    failed item was (a failure for good ends the retries: the caller has to act on it anyway).
    An item answered with a status in `done_status` counts as written. Documents are never
    echoed back in errors (`include_source_on_error=false`). `params` go with every request.

    Not elasticsearch.helpers.async_streaming_bulk: its retries (a fixed doubling without
    jitter, lost connections and timeouts not retried at all) would be a second retry path
    beside `Retries`, and callers name their own batches (the last one alone waits for a refresh).
    """
    pending = list(actions)

    async def send() -> list[PartFailure]:
        nonlocal pending
        operations = [line for action in pending for line in action.lines()]
        response = await es.bulk(operations=operations, include_source_on_error=False, **params)
        if not response.body.get("errors"):
            return []
        failed: list[tuple[BulkAction, PartFailure]] = []
        for action, item in zip(pending, response.body["items"], strict=True):
            result = next(iter(item.values()))
            status = int(result.get("status", 500))
            if status < 300 or status in done_status:
                continue
            failed.append((action, PartFailure(action.key, status, *error_type_and_reason(result))))
        failures = [failure for _, failure in failed]
        if failures and all(failure.transient for failure in failures):
            pending = [action for action, _ in failed]
            raise _ItemsTurnedAway(failures)
        return failures

    try:
        return await retries.call(what, send)
    except _ItemsTurnedAway as exc:
        return exc.failures


# The major of the installed elasticsearch-py: its requests carry
# `Accept: application/vnd.elasticsearch+json; compatible-with=<major>` (elastic_transport's
# default headers, set by elasticsearch/_async/client/__init__.py), which a server of another
# major older than it refuses.
CLIENT_MAJOR: Final = int(CLIENT_VERSION.split(".")[0])


async def check_server(es: AsyncElasticsearch, retries: Retries = DEFAULT_RETRIES) -> str:
    """The cluster's version (`GET /`); UnsupportedServerError when this client cannot use it.

    An older major refuses every request of this client with 400 `media_type_header_exception`
    ("Accept version must be either version 8 or 7, but found 9"); something that is not
    Elasticsearch (an OpenSearch, a proxy's page) lacks the `X-Elastic-Product` header the client
    checks. A newer major answers through its REST compatibility with this one: allowed, with a
    warning, as it was not tested.
    """
    wanted = f"Elasticsearch {CLIENT_MAJOR}.x (the major of elasticsearch-py {CLIENT_VERSION})"

    async def info() -> Any:
        try:
            return await es.info()
        except UnsupportedProductError as exc:
            raise UnsupportedServerError(f"the server is not Elasticsearch: kubechat needs {wanted}") from exc

    try:
        response = await retries.call("ask Elasticsearch its version", info)
    except RequestFailed as exc:
        if exc.error_type == "media_type_header_exception":
            raise UnsupportedServerError(
                f"Elasticsearch refuses this client's requests ({exc}): the server is older than "
                f"{CLIENT_MAJOR}.0, and kubechat needs {wanted}"
            ) from exc
        raise
    number = str((response.body.get("version") or {}).get("number", ""))
    try:
        major = int(number.split(".")[0])
    except ValueError:
        raise UnsupportedServerError(
            f"Elasticsearch reports no version ({number!r}); kubechat needs {wanted}"
        ) from None
    if major < CLIENT_MAJOR:
        raise UnsupportedServerError(f"Elasticsearch {number} is too old: kubechat needs {wanted}")
    if major > CLIENT_MAJOR:
        logger.warning(
            "Elasticsearch %s is newer than this client (elasticsearch-py %s) was tested with; it answers "
            "through its REST compatibility with %d.x",
            number, CLIENT_VERSION, CLIENT_MAJOR,
        )  # fmt: skip
    return number


def new_client(
    url: str,
    *,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_certs: str | None = None,
    request_timeout: float = 30.0,
) -> AsyncElasticsearch:
    """The client of the cluster at `url`: one per process, closed by whoever made it.

    Credentials (never logged) are those of StoreSettings.elasticsearch_credentials(): an API
    key, or a username and password; empty strings count as not given, as unset environment
    settings arrive that way.
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
        max_retries=0,  # Retries retries, with back-off
        **options,
    )
