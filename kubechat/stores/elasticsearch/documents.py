"""The cluster DocumentCatalog: Elasticsearch, one small index that every API replica shares.

It behaves as SQLiteDocumentCatalog does (the conformance suite runs both); what differs is how
that is made safe for several replicas writing at once.

Choices worth knowing:

* Keys. One index (`kubechat-documents` by default, strict mapping) holds three kinds of
  entry, told apart by a `kind` field and a prefix of `_id`, so that no value of a document
  id can collide with the others:
  - a document: `_id` `document:<Document.id>`, its source every Document field. Lookups by
    id are real-time GETs.
  - a content marker: `_id` `content:<knowledge base>:<sha256>`, naming the document that
    holds those bytes; created with `op_type=create`, which makes de-duplication atomic.
  - a rebuild: `_id` `rebuild:<knowledge base>`, the generation a full re-index is filling.
* Adding is three writes, so that a replica dying between two of them leaves nothing wrong:
  the document is first written `staged` (which no search, `get` or `find` returns), then
  the marker is created, then the document is switched to `document`. A replica that finds
  the marker taken returns the document it names, finishing that document's switch if its
  writer has not yet; one that finds the marker naming a document that is gone (a `delete`
  cut short) takes the marker over with a conditional write. A replica dying before its
  marker is written leaves an invisible staged entry behind, nothing else.
* Leases: `claim` and `release` read a document (a real-time GET, with `_seq_no` and
  `_primary_term`) and write it only if it has not changed since (`if_seq_no` /
  `if_primary_term`). Of concurrent claimers one write succeeds; the others get 409, read
  again and find a live lease. A 409 caused by something else (a progress update) is retried
  the same way, so an owner extending its lease does not lose it to its own progress
  updates. Lease times are the replicas' wall clocks, as in the embedded catalog: replicas
  need synchronised clocks (NTP), and skew shortens or lengthens leases by that much.
* Visibility: every write that a search must see (`pending`, listings, counts, `rebuilds`)
  carries `refresh=wait_for`, so once a call returns, any replica's search sees it. That
  costs each such write up to `index.refresh_interval`, which the index sets explicitly to
  1s so that an idle shard is not left unrefreshed (search-idle) and writes waiting for a
  refresh are not held up. `requeue` runs `_update_by_query` with `refresh=true` (it has no
  `wait_for`). Staged documents and markers are only ever read by real-time GET and are
  written without a refresh.
* Errors and retries are kubechat.stores.elasticsearch.client's: a request
  failing with 429/502/503/504, a timeout or a lost connection is retried with exponential
  back-off and jitter and then is StoreUnavailableError; anything else is StoreError. A
  requeue whose `_update_by_query` reports failures is StoreUnavailableError when each was
  turned away or failed inside the cluster (5xx), else StoreError.
* Cursors are kubechat.core.pagination's time cursors (`<created_at>:<id>`), as in the
  embedded catalog, so a cursor reads the same whichever catalog made it.
* A missing index is an error, not an empty catalog: `ensure_index` creates it (the process
  opening its stores calls it: kubechat.stores.open). A write to an index that was dropped
  later would let Elasticsearch auto-create it with a dynamic mapping unless the cluster
  setting `action.auto_create_index` excludes `kubechat-*`.
* The catalog runs on the process's one client (kubechat.stores.open) and leaves closing it
  to its opener.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, Final, TypeVar

from elasticsearch import AsyncElasticsearch

from kubechat.core.errors import DocumentNotFoundError
from kubechat.core.pagination import Page, page_of, parse_time_cursor, time_cursor
from kubechat.stores.documents import PENDING, PROGRESS_FIELDS, Document, DocumentStatus
from kubechat.stores.elasticsearch.client import DEFAULT_RETRIES, Retries, check_by_query
from kubechat.stores.elasticsearch.entries import EntryIndex
from kubechat.stores.errors import StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_INDEX: Final = "kubechat-documents"
# Bumped when the mapping changes in a way that needs a migration.
SCHEMA_VERSION: Final = 1

_DOCUMENT: Final = "document"
_STAGED: Final = "staged"
_CONTENT: Final = "content"
_REBUILD: Final = "rebuild"

_FIELDS: Final = [f.name for f in fields(Document)]
_PENDING_VALUES: Final = [status.value for status in PENDING]
_DOCUMENT_ORDER: Final = [{"created_at": "asc"}, {"id": "asc"}]
# How often a conditional write that keeps losing to other writers is tried again.
_CONFLICT_ATTEMPTS: Final = 5
# Requeue scripts set fields to constants given as parameters: the source stays fixed and
# Elasticsearch compiles it once.
_REQUEUE_SCRIPT: Final = (
    "ctx._source.status = params.status; ctx._source.updated_at = params.now; "
    "ctx._source.chunks_indexed = 0; ctx._source.error_code = ''; ctx._source.error_message = ''; "
    "ctx._source.epoch = (ctx._source.epoch == null ? 0 : ctx._source.epoch) + 1"
)

T = TypeVar("T")

_BEING_DELETED: Final = {"term": {"status": DocumentStatus.DELETING.value}}
_KEYWORD: Final = {"type": "keyword"}
_LONG_KEYWORD: Final = {"type": "keyword", "ignore_above": 1024}
_TIME: Final = {"type": "double"}  # epoch seconds, exactly as given: cursors compare them


def catalog_index_body(replicas: int | None = None) -> dict[str, Any]:
    """The create-index body of the catalog (one shard: it is small, and counts stay exact)."""
    settings: dict[str, Any] = {"number_of_shards": 1, "refresh_interval": "1s"}
    if replicas is not None:
        settings["number_of_replicas"] = replicas
    return {
        "settings": settings,
        "mappings": {
            "dynamic": "strict",
            "_meta": {"kubechat_schema_version": SCHEMA_VERSION},
            "properties": {
                "kind": _KEYWORD,
                # documents (and staged documents)
                "id": _KEYWORD,
                "knowledge_base": _KEYWORD,
                "name": _LONG_KEYWORD,
                "format": _KEYWORD,
                "content_type": _LONG_KEYWORD,
                "size": {"type": "long"},
                "sha256": _KEYWORD,
                "object_key": _LONG_KEYWORD,
                "uploaded_by": _LONG_KEYWORD,
                "status": _KEYWORD,
                "created_at": _TIME,
                "updated_at": _TIME,
                "chunks": {"type": "integer"},
                "chunks_indexed": {"type": "integer"},
                "pages": {"type": "integer"},
                "error_code": _KEYWORD,
                "error_message": {"type": "text", "index": False},
                "indexed_at": _TIME,
                "lease_owner": _KEYWORD,
                "lease_expires": _TIME,
                "epoch": {"type": "long"},
                # content markers (with knowledge_base and sha256)
                "document_id": _KEYWORD,
                # rebuilds (with knowledge_base)
                "index_name": _KEYWORD,
            },
        },
    }


def _document_key(document_id: str) -> str:
    return f"{_DOCUMENT}:{document_id}"


def _content_key(knowledge_base: str, sha256: str) -> str:
    return f"{_CONTENT}:{knowledge_base}:{sha256}"


def _rebuild_key(knowledge_base: str) -> str:
    return f"{_REBUILD}:{knowledge_base}"


def _source(document: Document, kind: str) -> dict[str, Any]:
    source = {name: getattr(document, name) for name in _FIELDS}
    source["status"] = document.status.value
    source["kind"] = kind
    return source


def _optional(value: Any, kind: Callable[[Any], T]) -> T | None:
    return None if value is None else kind(value)


def _document(source: Mapping[str, Any]) -> Document:
    values = {name: source[name] for name in _FIELDS if name in source}
    values["status"] = DocumentStatus(values["status"])
    # JSON does not keep 1.0 apart from 1: give every number its field's type back.
    for name in ("created_at", "updated_at", "lease_expires"):
        values[name] = float(values[name])
    for name in ("size", "chunks", "chunks_indexed"):
        values[name] = int(values[name])
    values["indexed_at"] = _optional(values.get("indexed_at"), float)
    values["pages"] = _optional(values.get("pages"), int)
    return Document(**values)


def _cursor(document: Document) -> str:
    return time_cursor(document.created_at, document.id)


class ElasticsearchDocumentCatalog(EntryIndex):
    """DocumentCatalog on Elasticsearch (see the module docstring for the choices it makes).

    `ensure_index` must have created the index (kubechat.stores.open calls it).
    """

    def __init__(
        self,
        client: AsyncElasticsearch,
        index: str = DEFAULT_INDEX,
        *,
        retries: Retries = DEFAULT_RETRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, index, retries)
        self._clock = clock

    async def ensure_index(self, replicas: int | None = None) -> bool:
        """Create the index if it does not exist; False if it did (another replica may have just made it)."""
        return await self._ensure_index(catalog_index_body(replicas), "document catalog")

    # -- documents ------------------------------------------------------------------------

    async def add(self, document: Document) -> tuple[Document, bool]:
        key = _document_key(document.id)
        if not await self._create(f"stage document {document.id}", key, _source(document, _STAGED)):
            # Our own earlier attempt (a retried request) wrote it, or the id is taken.
            stored = await self._read(f"get document {document.id}", key)
            content = (document.knowledge_base, document.sha256)
            if stored is None or (stored.source["knowledge_base"], stored.source["sha256"]) != content:
                raise StoreError(f"document id {document.id} is taken by other content")
        marker_key = _content_key(document.knowledge_base, document.sha256)
        marker = {
            "kind": _CONTENT,
            "knowledge_base": document.knowledge_base,
            "sha256": document.sha256,
            "document_id": document.id,
        }
        what = f"claim the content of {document.id} in {document.knowledge_base}"
        for _ in range(_CONFLICT_ATTEMPTS):
            if await self._create(what, marker_key, marker):
                break
            taken = await self._read(what, marker_key)
            if taken is None:
                continue  # deleted since: try to create it again
            owner = taken.source["document_id"]
            if owner == document.id:
                break  # our own earlier attempt (a retried request)
            existing = await self._read(f"get document {owner}", _document_key(owner))
            if existing is not None:
                # Its writer may be between its last two writes (or dead): finishing is harmless.
                if existing.source["kind"] == _STAGED and not await self._publish(owner):
                    continue
                await self._discard(document.id)
                return _document(existing.source), False
            # The marker outlived its document (a delete was cut short): take it over.
            if await self._update(what, marker_key, {"document_id": document.id}, expected=taken):
                break
        else:
            raise StoreUnavailableError(f"{what}: other writers kept changing it")
        if not await self._publish(document.id):
            raise StoreError(f"staged document {document.id} disappeared before it was published")
        return document, True

    async def _publish(self, document_id: str) -> bool:
        """Make a staged document visible; False if it is gone."""
        return await self._update(
            f"publish document {document_id}",
            _document_key(document_id),
            {"kind": _DOCUMENT},
            refresh="wait_for",
        )

    async def _discard(self, document_id: str) -> None:
        """Delete our staged document that turned out to be a duplicate; left behind, it is harmless."""
        try:
            await self._delete(f"discard staged document {document_id}", _document_key(document_id))
        except StoreError as exc:
            logger.warning("could not delete staged duplicate %s (invisible, harmless): %s", document_id, exc)

    async def get(self, knowledge_base: str, document_id: str) -> Document:
        document = await self.find(document_id)
        if document is None or document.knowledge_base != knowledge_base:
            raise DocumentNotFoundError(f"document {document_id} not found in {knowledge_base}")
        return document

    async def find(self, document_id: str) -> Document | None:
        stored = await self._read(f"get document {document_id}", _document_key(document_id))
        if stored is None or stored.source["kind"] != _DOCUMENT:
            return None
        return _document(stored.source)

    async def list_documents(
        self, knowledge_base: str, limit: int, cursor: str | None, status: DocumentStatus | None = None
    ) -> Page[Document]:
        body: dict[str, Any] = {"search_after": list(parse_time_cursor(cursor))} if cursor else {}
        filters = self._documents_of(knowledge_base)
        if status is not None:
            filters.append({"term": {"status": status.value}})
        response = await self._search(
            f"list documents of {knowledge_base}",
            query={"bool": {"filter": filters}},
            sort=_DOCUMENT_ORDER,
            size=max(limit, 0) + 1,
            **body,
        )
        documents = [_document(hit["_source"]) for hit in response["hits"]["hits"]]
        return page_of(documents, limit, _cursor)

    async def update(self, document_id: str, status: DocumentStatus, **progress: Any) -> None:
        unknown = set(progress) - PROGRESS_FIELDS
        if unknown:
            raise TypeError(f"not progress fields: {sorted(unknown)}")
        changes = {"status": status.value, "updated_at": self._clock(), **progress}
        # A missing document is no error, as in the embedded catalog (it was deleted meanwhile).
        await self._update(
            f"update document {document_id}", _document_key(document_id), changes, refresh="wait_for"
        )

    async def requeue(self, knowledge_base: str, document_ids: list[str] | None = None) -> int:
        if document_ids is not None and not document_ids:
            return 0
        filters = self._documents_of(knowledge_base)
        if document_ids is not None:
            filters.append({"terms": {"id": list(document_ids)}})
        what = f"requeue documents of {knowledge_base}"
        script = {
            "source": _REQUEUE_SCRIPT,
            "lang": "painless",
            "params": {"status": DocumentStatus.QUEUED.value, "now": self._clock()},
        }
        for _ in range(_CONFLICT_ATTEMPTS):
            response = await self._call(
                what,
                lambda: self._es.update_by_query(
                    index=self._index,
                    query={"bool": {"filter": filters, "must_not": [_BEING_DELETED]}},
                    script=script,
                    conflicts="proceed",
                    refresh=True,
                ),
            )
            body = response.body
            check_by_query(what, body, "documents")
            # Documents written meanwhile were skipped; setting the same fields again is harmless.
            if not body.get("version_conflicts"):
                return int(body["total"])
            logger.info("%s: %s version conflicts; running it again", what, body["version_conflicts"])
        raise StoreUnavailableError(f"{what}: other writers kept changing the documents")

    async def delete(self, document_id: str) -> None:
        key = _document_key(document_id)
        stored = await self._read(f"get document {document_id}", key)
        if stored is None:
            return
        await self._delete(f"delete document {document_id}", key, refresh="wait_for")
        # Then its marker, unless another document has taken it over. Dying in between leaves
        # a marker naming a missing document, which the next add of those bytes takes over.
        marker_key = _content_key(stored.source["knowledge_base"], stored.source["sha256"])
        what = f"release the content of {document_id}"
        marker = await self._read(what, marker_key)
        if marker is not None and marker.source["document_id"] == document_id:
            await self._delete(what, marker_key, expected=marker)

    # -- ingestion leases -------------------------------------------------------------------

    async def claim(self, document_id: str, worker: str, lease_s: float) -> Document | None:
        key = _document_key(document_id)
        what = f"claim document {document_id} for {worker}"
        for _ in range(_CONFLICT_ATTEMPTS):
            stored = await self._read(what, key)
            if stored is None or stored.source["kind"] != _DOCUMENT:
                return None
            source, now = stored.source, self._clock()
            if source["status"] not in _PENDING_VALUES:
                return None
            if source["lease_owner"] not in ("", worker) and float(source["lease_expires"]) >= now:
                return None
            lease = {"lease_owner": worker, "lease_expires": now + lease_s}
            if await self._update(what, key, lease, expected=stored, refresh="wait_for"):
                return _document({**source, **lease})
            # Changed since we read it: another claimer, or a progress update. Look again.
        logger.warning("%s: gave up after %d conflicting writes", what, _CONFLICT_ATTEMPTS)
        return None

    async def release(self, document_id: str, worker: str) -> None:
        key = _document_key(document_id)
        what = f"release document {document_id} from {worker}"
        for _ in range(_CONFLICT_ATTEMPTS):
            stored = await self._read(what, key)
            if stored is None or stored.source["lease_owner"] != worker:
                return
            free = {"lease_owner": "", "lease_expires": 0.0}
            if await self._update(what, key, free, expected=stored, refresh="wait_for"):
                return
        # The lease runs out by itself; the document is picked up again then.
        logger.warning("%s: gave up after %d conflicting writes", what, _CONFLICT_ATTEMPTS)

    async def pending(self) -> list[Document]:
        lease_free = {
            "bool": {
                "should": [
                    {"term": {"lease_owner": ""}},
                    {"range": {"lease_expires": {"lt": self._clock()}}},
                ],
                "minimum_should_match": 1,
            }
        }
        query = {
            "bool": {
                "filter": [
                    {"term": {"kind": _DOCUMENT}},
                    {"terms": {"status": _PENDING_VALUES}},
                    lease_free,
                ]
            }
        }
        sources = await self._search_all("list pending documents", query, _DOCUMENT_ORDER)
        return [_document(source) for source in sources]

    # -- counts -------------------------------------------------------------------------------

    async def count_pending(self, knowledge_base: str) -> int:
        filters = [*self._documents_of(knowledge_base), {"terms": {"status": _PENDING_VALUES}}]
        response = await self._call(
            f"count pending documents of {knowledge_base}",
            lambda: self._es.count(index=self._index, query={"bool": {"filter": filters}}),
        )
        return int(response.body["count"])

    async def status_counts(self, knowledge_base: str) -> dict[str, int]:
        response = await self._search(
            f"count documents of {knowledge_base} by status",
            query={"bool": {"filter": self._documents_of(knowledge_base)}},
            size=0,
            aggs={"status": {"terms": {"field": "status", "size": 2 * len(DocumentStatus)}}},
        )
        buckets = response["aggregations"]["status"]["buckets"]
        return {str(bucket["key"]): int(bucket["doc_count"]) for bucket in buckets}

    # -- rebuilds -----------------------------------------------------------------------------

    async def set_rebuild(self, knowledge_base: str, index: str | None) -> None:
        key = _rebuild_key(knowledge_base)
        what = f"record the rebuild of {knowledge_base}"
        if index is None:
            await self._delete(what, key, refresh="wait_for")
            return
        rebuild = {"kind": _REBUILD, "knowledge_base": knowledge_base, "index_name": index}
        await self._call(
            what,
            lambda: self._es.index(index=self._index, id=key, document=rebuild, refresh="wait_for"),
        )

    async def rebuilds(self) -> dict[str, str]:
        sources = await self._search_all(
            "list rebuilds", {"term": {"kind": _REBUILD}}, [{"knowledge_base": "asc"}]
        )
        return {str(source["knowledge_base"]): str(source["index_name"]) for source in sources}

    # -- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _documents_of(knowledge_base: str) -> list[dict[str, Any]]:
        return [{"term": {"kind": _DOCUMENT}}, {"term": {"knowledge_base": knowledge_base}}]
