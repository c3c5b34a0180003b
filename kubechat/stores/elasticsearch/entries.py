"""Entries of one Elasticsearch index read and written one by one, with optimistic concurrency.

The document catalog and the chat history keep small records (documents, sessions, messages)
in an index of their own and need the same few operations: a real-time read that returns what
a conditional write needs (`_seq_no`, `_primary_term`), create-if-absent, update and delete
that can be made conditional on the version read, and searches that refuse partial answers.
`EntryIndex` holds them once; each store subclasses it. Every request goes through
kubechat.stores.elasticsearch.client's retries and error mapping, on the process's one client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from elasticsearch import AsyncElasticsearch

from kubechat.stores.elasticsearch.client import RequestFailed, Retries

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Unconditional updates of one entry retry Elasticsearch's own version conflicts this often.
RETRY_ON_CONFLICT: Final = 5
PAGE_SIZE: Final = 1000


def missing(exc: RequestFailed) -> bool:
    """A 404 for an entry, as opposed to one for the whole index (which is an error)."""
    return exc.status == 404 and exc.error_type != "index_not_found_exception"


@dataclass(frozen=True)
class Stored:
    """An entry as a real-time GET returned it, with what a conditional write needs."""

    source: dict[str, Any]
    seq_no: int
    primary_term: int


class EntryIndex:
    """Reads and writes of single entries of one index, each retried by the store's `Retries`."""

    def __init__(self, client: AsyncElasticsearch, index: str, retries: Retries) -> None:
        self._index = index
        # `retries` retries, not the client, whoever made it (the process's one client has
        # its own switched off already).
        self._es = client.options(max_retries=0)
        self._retries = retries

    @property
    def index(self) -> str:
        return self._index

    async def close(self) -> None:
        """Nothing to release: the client is its opener's (kubechat.stores.open), who closes it."""

    async def ensure_index(self, replicas: int | None = None) -> bool:
        """Create the store's index if it does not exist; False if it did."""
        raise NotImplementedError

    async def _ensure_index(self, body: Mapping[str, Any], what: str) -> bool:
        """Create the index if it does not exist; False if it did (another replica may have
        just made it)."""
        try:
            await self._call(
                f"create index {self._index}", lambda: self._es.indices.create(index=self._index, **body)
            )
        except RequestFailed as exc:
            if exc.error_type == "resource_already_exists_exception":
                return False
            raise
        logger.info("created %s index %s", what, self._index)
        return True

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        return await self._retries.call(what, request)

    async def _read(self, what: str, key: str) -> Stored | None:
        try:
            response = await self._call(what, lambda: self._es.get(index=self._index, id=key))
        except RequestFailed as exc:
            if missing(exc):
                return None
            raise
        body = response.body
        return Stored(dict(body["_source"]), int(body["_seq_no"]), int(body["_primary_term"]))

    async def _create(self, what: str, key: str, source: Mapping[str, Any]) -> bool:
        """Create an entry that must not exist yet; False if it does."""
        try:
            await self._call(what, lambda: self._es.create(index=self._index, id=key, document=source))
        except RequestFailed as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _update(
        self,
        what: str,
        key: str,
        changes: Mapping[str, Any],
        *,
        expected: Stored | None = None,
        refresh: str | None = None,
    ) -> bool:
        """Set fields of an entry; False if it is missing or, when `expected`, changed since."""
        options: dict[str, Any] = {"refresh": refresh}
        if expected is not None:
            options.update(if_seq_no=expected.seq_no, if_primary_term=expected.primary_term)
        else:
            options["retry_on_conflict"] = RETRY_ON_CONFLICT
        try:
            await self._call(what, lambda: self._es.update(index=self._index, id=key, doc=changes, **options))
        except RequestFailed as exc:
            if missing(exc) or (exc.status == 409 and expected is not None):
                return False
            raise
        return True

    async def _delete(
        self, what: str, key: str, *, expected: Stored | None = None, refresh: str | None = None
    ) -> bool:
        """Delete an entry; False if it is missing or, when `expected`, changed since."""
        options: dict[str, Any] = {"refresh": refresh}
        if expected is not None:
            options.update(if_seq_no=expected.seq_no, if_primary_term=expected.primary_term)
        try:
            await self._call(what, lambda: self._es.delete(index=self._index, id=key, **options))
        except RequestFailed as exc:
            if missing(exc) or (exc.status == 409 and expected is not None):
                return False
            raise
        return True

    async def _search(self, what: str, **body: Any) -> dict[str, Any]:
        # A partial answer would silently drop entries from a listing or a count.
        response = await self._call(
            what,
            lambda: self._es.search(
                index=self._index, track_total_hits=False, allow_partial_search_results=False, **body
            ),
        )
        return dict(response.body)

    async def _search_all(self, what: str, query: Mapping[str, Any], sort: list[Any]) -> list[dict[str, Any]]:
        """Every match, page by page (`search_after` on a sort that is unique per entry)."""
        sources: list[dict[str, Any]] = []
        after: dict[str, Any] = {}
        while True:
            response = await self._search(what, query=query, sort=sort, size=PAGE_SIZE, **after)
            hits = response["hits"]["hits"]
            sources += [hit["_source"] for hit in hits]
            if len(hits) < PAGE_SIZE:
                return sources
            after = {"search_after": hits[-1]["sort"]}
