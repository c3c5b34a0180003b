"""The cluster ChunkStore: Elasticsearch, one index per knowledge-base generation behind an alias.

Readers go through the alias (`kb.index_alias`); writers name a physical index
`<alias>.<generation>` (six digits, as Elasticsearch's rollover numbers them), so a full
re-index builds a new generation next to the live one and `activate` swaps the alias in one
atomic `_aliases` call.

Choices worth knowing:

* Visibility: an `upsert` that fits one bulk request carries `refresh=wait_for`; one of several
  requests refreshes the index once after the last, since `wait_for` waits only for the shards
  its own request touched and earlier batches may sit on others. `visible=False` skips both;
  ingestion passes it for a document's batches and then calls `make_visible` (one refresh per
  document), so an `indexed` document is searchable. `delete_document` refreshes
  (delete-by-query has no `wait_for`).
* What Elasticsearch would refuse is refused first, so a spec or a vector problem is reported
  as one: vectors are checked against the index's similarity before a write or a kNN search
  (kubechat.stores.chunks.vector_problem); a KnowledgeBase spec Elasticsearch refuses to create
  an index from (400) is InvalidIndexSpecError with the server's reason, not a store outage.
* Index settings never change in place: `index_drift` compares the live index's mapping and
  settings with `index_body(kb)`, and a full re-index applies the difference.
* Retries: kubechat.stores.elasticsearch.client's (tenacity; the transport's own are switched
  off). A whole request that fails with 429/502/503/504, a timeout or a lost connection is
  retried with exponential back-off and jitter, and so are bulk items turned away with
  429/502/503/504 (only those items, while no item failed for good); when the retries run out
  the error is StoreUnavailableError. Any other failure is StoreError, and so is a bulk item
  that fails for good (a mapping error) or a delete-by-query failure other than those.
* A missing alias reads as an empty knowledge base: searches return [], `count` 0,
  `get_chunk` None. Writes name a physical index; before the first write to one, the store
  reads its mapping (vector size), so a missing index is a StoreError rather than one that
  Elasticsearch auto-creates with a dynamic mapping. An index dropped later, between writes,
  is only kept from coming back by the cluster setting
  `action.auto_create_index: "-kubechat-*,+*"`, which deployments should set.
* Documents are never logged, and bulk errors are asked not to echo document sources.
* The store runs on the process's one client (kubechat.stores.open) and leaves closing it to
  its opener.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from elasticsearch import AsyncElasticsearch

from kubechat.core.resources import KnowledgeBase, Similarity
from kubechat.stores.chunks import ChunkRecord, RankedChunk, SpecDrift, Vector, check_vector
from kubechat.stores.elasticsearch.client import (
    DEFAULT_RETRIES,
    BulkAction,
    RequestFailed,
    Retries,
    bulk,
    check_by_query,
    partial_failure,
)
from kubechat.stores.errors import (
    EmbeddingMismatchError,
    IndexMissingError,
    InvalidIndexSpecError,
    InvalidVectorError,
    StoreError,
    StoreUnavailableError,
)

logger = logging.getLogger(__name__)

# Bumped when the mapping changes in a way that needs a re-index.
SCHEMA_VERSION: Final = 1
VECTOR_FIELD: Final = "vector"
# Elasticsearch's ceiling for both `k` and `num_candidates`.
MAX_KNN: Final = 10_000


def index_options(kb: KnowledgeBase) -> dict[str, Any]:
    """`dense_vector`'s index_options: the spec's type (else Elasticsearch 9's default for the
    dimensions), with `m` and `ef_construction` for the HNSW types only (the flat ones take
    neither: Elasticsearch refuses parameters a type does not have)."""
    index = kb.spec.index
    chosen = index.vector_index_type(kb.spec.embedding.dimensions)
    options: dict[str, Any] = {"type": chosen.value}
    if chosen.is_hnsw:
        options["m"] = index.hnsw.m
        options["ef_construction"] = index.hnsw.ef_construction
    return options


def analysis_settings(kb: KnowledgeBase) -> dict[str, Any]:
    """The `analysis` index settings of the spec's custom analyzers ({} when it declares none)."""
    analyzers = {
        name: {
            "type": "custom",
            "tokenizer": spec.tokenizer,
            "filter": spec.filter,
            "char_filter": spec.char_filter,
        }
        for name, spec in sorted(kb.spec.index.analyzers.items())
    }
    return {"analyzer": analyzers} if analyzers else {}


def index_body(kb: KnowledgeBase) -> dict[str, Any]:
    """The create-index body (settings and mappings) of one generation of `kb`'s index."""
    embedding, index = kb.spec.embedding, kb.spec.index
    settings: dict[str, Any] = {
        "number_of_shards": index.shards,
        "number_of_replicas": index.replicas,
    }
    if analysis := analysis_settings(kb):
        settings["analysis"] = analysis
    return {
        "settings": settings,
        "mappings": {
            "dynamic": "strict",
            "_meta": {
                "kubechat_schema_version": SCHEMA_VERSION,
                "knowledge_base": f"{kb.metadata.namespace}/{kb.name}",
                "embedding_model": embedding.model,
                "dimensions": embedding.dimensions,
                "similarity": index.similarity.value,
            },
            "properties": {
                "text": {"type": "text", "analyzer": index.analyzer},
                "document_id": {"type": "keyword"},
                "document_name": {"type": "keyword", "ignore_above": 1024},
                "ordinal": {"type": "integer"},
                "page": {"type": "integer"},
                # A heading shown with a citation and filterable exactly; BM25 ranks `text`
                # alone so that this store ranks like the embedded one.
                "section": {"type": "keyword", "ignore_above": 1024},
                VECTOR_FIELD: {
                    "type": "dense_vector",
                    "dims": embedding.dimensions,
                    "index": True,
                    "similarity": index.similarity.value,
                    "index_options": index_options(kb),
                },
            },
        },
    }


def index_drift(kb: KnowledgeBase, info: Mapping[str, Any]) -> list[SpecDrift]:
    """What of spec.index differs from an index as `GET <index>` describes it (`info`: its
    `mappings` and `settings`). Replicas are left out: Elasticsearch changes them in place."""
    wanted = index_body(kb)
    properties = (info.get("mappings") or {}).get("properties") or {}
    vector = properties.get(VECTOR_FIELD) or {}
    options = vector.get("index_options") or {}
    wanted_options = wanted["mappings"]["properties"][VECTOR_FIELD]["index_options"]
    settings = (info.get("settings") or {}).get("index") or {}
    built_analysis = ((settings.get("analysis") or {}).get("analyzer")) or {}
    pairs = [
        ("index.similarity", vector.get("similarity"), kb.spec.index.similarity.value),
        ("index.type", options.get("type"), wanted_options["type"]),
        (
            "index.analyzer",
            (properties.get("text") or {}).get("analyzer", "standard"),
            kb.spec.index.analyzer,
        ),
        ("index.shards", settings.get("number_of_shards"), kb.spec.index.shards),
    ]
    if "m" in wanted_options:
        pairs.append(("index.hnsw.m", options.get("m"), wanted_options["m"]))
        pairs.append(
            ("index.hnsw.efConstruction", options.get("ef_construction"), wanted_options["ef_construction"])
        )
    wanted_analysis = wanted["settings"].get("analysis", {}).get("analyzer", {})
    for name in sorted(set(built_analysis) | set(wanted_analysis)):
        pairs.append(
            (
                f"index.analyzers.{name}",
                _analyzer(built_analysis.get(name)),
                _analyzer(wanted_analysis.get(name)),
            )
        )
    return [
        SpecDrift(field, _shown(built), _shown(spec))
        for field, built, spec in pairs
        if _shown(built) != _shown(spec)
    ]


def _analyzer(definition: Mapping[str, Any] | None) -> str | None:
    """A custom analyzer's definition in one comparable line (Elasticsearch answers a one-element
    list as a list, and lists it was given as lists)."""
    if not definition:
        return None

    def names(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else [str(v) for v in value or []]

    parts = [f"tokenizer={definition.get('tokenizer', '')}"]
    parts += [f"filter={','.join(names(definition.get('filter')))}"]
    parts += [f"char_filter={','.join(names(definition.get('char_filter')))}"]
    return " ".join(parts)


def _shown(value: Any) -> str:
    """Settings come back as strings ("2"), mappings as JSON values: compare them as text."""
    return "(none)" if value is None else str(value)


def generation_index(kb: KnowledgeBase, generation: int) -> str:
    """The physical index name of one generation."""
    return kb.generation_index(generation)


def index_generation(kb: KnowledgeBase, index: str) -> int | None:
    """The generation `index` is of `kb`, or None when it is not one of its indices.

    Matching the whole name matters: a wildcard would also match other knowledge bases'.
    """
    match = re.fullmatch(re.escape(kb.index_alias) + r"\.(\d+)", index)
    return int(match.group(1)) if match else None


class ElasticsearchChunkStore:
    """ChunkStore on Elasticsearch (see the module docstring for the choices it makes)."""

    def __init__(
        self, client: AsyncElasticsearch, *, bulk_chunk_size: int = 500, retries: Retries = DEFAULT_RETRIES
    ) -> None:
        if bulk_chunk_size < 1:
            raise ValueError("bulk_chunk_size must be >= 1")
        # One retry path: `retries` (with back-off and item retries), not also the transport's,
        # whoever made the client.
        self._es = client.options(max_retries=0)
        self._bulk_chunk_size = bulk_chunk_size
        self._retries = retries
        self._call = retries.call
        # Vector size and similarity per physical index, to refuse a wrong vector before sending
        # it; the live index's similarity per alias, for query vectors.
        self._vectors: dict[str, tuple[int, Similarity]] = {}
        self._alias_similarity: dict[str, Similarity] = {}

    # -- lifecycle of indices ------------------------------------------------------------

    async def ensure_index(self, kb: KnowledgeBase, *, create: bool = True) -> str:
        active = await self._active_index(kb)
        if active is not None:
            return active
        if not create:
            raise IndexMissingError(f"alias {kb.index_alias} of knowledge base {kb.name} does not exist")
        index = generation_index(kb, 1)
        if not await self._create_index(kb, index, alias=kb.index_alias):
            # Another replica created it first, alias included (one create call does both);
            # the node we ask may apply that cluster state a moment after the master did.
            active = await self._retries.poll(lambda: self._active_index(kb))
            if active is not None:
                return active
            raise StoreError(
                f"index {index} exists but alias {kb.index_alias} does not (left over, or auto-created by a "
                "write after a drop); drop the knowledge base's indices to start over"
            )
        logger.info("created index %s behind alias %s", index, kb.index_alias)
        return index

    async def _create_index(self, kb: KnowledgeBase, index: str, alias: str | None = None) -> bool:
        """Create one generation (and the alias, in the same call); False if it exists already."""
        aliases = {alias: {"is_write_index": True}} if alias is not None else None
        try:
            await self._call(
                f"create index {index}",
                lambda: self._es.indices.create(index=index, **index_body(kb), aliases=aliases),
            )
        except RequestFailed as exc:
            if exc.error_type == "resource_already_exists_exception":
                return False
            if exc.status == 400:  # the mapping or settings the spec makes: a retry changes nothing
                name = f"{kb.metadata.namespace}/{kb.name}"
                raise InvalidIndexSpecError(
                    f"Elasticsearch refused the index of KnowledgeBase {name}: {exc}"
                ) from exc
            raise
        self._vectors[index] = (kb.spec.embedding.dimensions, kb.spec.index.similarity)
        if alias is not None:
            self._alias_similarity[alias] = kb.spec.index.similarity
        return True

    async def _active_index(self, kb: KnowledgeBase) -> str | None:
        """The index behind the alias, checked against the spec; None when there is no alias."""
        found = await self._describe_active(kb)
        return None if found is None else found[0]

    async def _describe_active(self, kb: KnowledgeBase) -> tuple[str, Mapping[str, Any]] | None:
        """The index behind the alias and `GET <alias>`'s description of it (mappings, settings),
        checked against the spec; None when there is no alias."""
        alias = kb.index_alias
        try:
            response = await self._call(f"get alias {alias}", lambda: self._es.indices.get(index=alias))
        except RequestFailed as exc:
            if exc.status == 404:
                return None
            raise
        indices: dict[str, Any] = dict(response.body)
        if alias in indices:
            raise StoreError(f"{alias} is an index, not an alias; kubechat cannot manage it")
        if len(indices) != 1:
            raise StoreError(f"alias {alias} points at {len(indices)} indices {sorted(indices)}, not one")
        index, info = next(iter(indices.items()))
        mappings = info.get("mappings", {})
        meta = mappings.get("_meta") or {}
        if "embedding_model" not in meta or "dimensions" not in meta:
            raise StoreError(f"index {index} records no kubechat _meta; it was not created by kubechat")
        embedding = kb.spec.embedding
        if meta["embedding_model"] != embedding.model or meta["dimensions"] != embedding.dimensions:
            raise EmbeddingMismatchError(
                f"index {index} holds vectors of model {meta['embedding_model']!r} "
                f"({meta['dimensions']} dimensions) but KnowledgeBase {kb.metadata.namespace}/{kb.name} "
                f"names model {embedding.model!r} ({embedding.dimensions} dimensions); re-index it"
            )
        vector = mappings.get("properties", {}).get(VECTOR_FIELD, {})
        dims = vector.get("dims")
        similarity = Similarity(vector.get("similarity") or meta.get("similarity") or Similarity.COSINE)
        self._vectors[index] = (int(dims) if dims is not None else int(meta["dimensions"]), similarity)
        self._alias_similarity[alias] = similarity
        return index, info

    async def index_drift(self, kb: KnowledgeBase) -> list[SpecDrift]:
        found = await self._describe_active(kb)
        return [] if found is None else index_drift(kb, found[1])

    async def _generations(self, kb: KnowledgeBase) -> dict[int, str]:
        """Every physical index of `kb`, open or closed, by generation."""
        pattern = f"{kb.index_alias}.*"
        response = await self._call(
            f"list indices {pattern}",
            lambda: self._es.indices.get_alias(index=pattern, expand_wildcards=["open", "closed"]),
        )
        found: dict[int, str] = {}
        for index in response.body:
            generation = index_generation(kb, index)
            if generation is not None:
                found[generation] = index
        return found

    async def create_generation(self, kb: KnowledgeBase) -> str:
        generation = max(await self._generations(kb), default=0) + 1
        for _ in range(3):
            index = generation_index(kb, generation)
            if await self._create_index(kb, index):
                logger.info("created index %s (inactive) for a re-index of %s", index, kb.index_alias)
                return index
            generation += 1  # a concurrent re-index took this number
        raise StoreError(f"could not create a new generation of {kb.index_alias}: names keep being taken")

    async def activate(self, kb: KnowledgeBase, index: str) -> None:
        alias = kb.index_alias
        new_generation = index_generation(kb, index)
        if new_generation is None:
            raise StoreError(f"{index} is not an index of {alias}")
        try:
            response = await self._call(f"get alias {alias}", lambda: self._es.indices.get_alias(name=alias))
            current = set(response.body)
        except RequestFailed as exc:
            if exc.status != 404:
                raise
            current = set()
        if current != {index}:
            add = {"add": {"index": index, "alias": alias, "is_write_index": True}}
            removes = [{"remove": {"index": old, "alias": alias}} for old in sorted(current - {index})]
            actions: list[dict[str, Any]] = [add, *removes]
            await self._call(
                f"point alias {alias} at {index}", lambda: self._es.indices.update_aliases(actions=actions)
            )
            logger.info("alias %s now points at %s", alias, index)
        self._alias_similarity.pop(alias, None)
        if index in self._vectors:
            self._alias_similarity[alias] = self._vectors[index][1]
        # Earlier generations go, and any the alias left; a newer one may be a re-index still
        # being built, so it stays. An index that is not a generation of this knowledge base is
        # never deleted, even if someone had put it behind the alias.
        generations = await self._generations(kb)
        stale = {name for number, name in generations.items() if number < new_generation}
        stale |= (current - {index}) & set(generations.values())
        await self._delete_indices(sorted(stale))

    async def drop(self, kb: KnowledgeBase) -> None:
        # Deleting an index drops its aliases too. Names are listed, not a wildcard: the
        # cluster refuses wildcard deletes by default (action.destructive_requires_name) and
        # `<alias>-*` would also match other knowledge bases.
        await self._delete_indices(sorted((await self._generations(kb)).values()))
        self._alias_similarity.pop(kb.index_alias, None)

    async def _delete_indices(self, indices: Sequence[str]) -> None:
        if not indices:
            return
        await self._call(
            f"delete indices {', '.join(indices)}",
            lambda: self._es.indices.delete(index=list(indices), ignore_unavailable=True),
        )
        for index in indices:
            self._vectors.pop(index, None)
        logger.info("deleted indices %s", ", ".join(indices))

    # -- writes -------------------------------------------------------------------------

    async def upsert(self, index: str, chunks: Sequence[ChunkRecord], *, visible: bool = True) -> None:
        if not chunks:
            return
        dims, similarity = await self._index_vectors(index)
        actions = [
            BulkAction("index", chunk.chunk_id, _source(chunk, dims, similarity, index)) for chunk in chunks
        ]
        size = self._bulk_chunk_size
        batches = [actions[start : start + size] for start in range(0, len(actions), size)]
        # One request waits for the refresh of the shards it wrote to. Several may have written
        # to shards the last one did not touch: those are refreshed explicitly afterwards.
        wait_for = visible and len(batches) == 1
        what = f"bulk write to {index}"
        for batch in batches:
            try:
                failures = await bulk(
                    self._es, what, batch, self._retries, index=index,
                    refresh="wait_for" if wait_for else None,
                )  # fmt: skip
                if failures:
                    raise partial_failure(what, failures, len(batch), "chunks")
            except StoreError:
                # The mapping may have changed under us (index dropped and re-created).
                self._vectors.pop(index, None)
                raise
        if visible and not wait_for:
            await self.make_visible(index)

    async def make_visible(self, index: str) -> None:
        await self._call(f"refresh {index}", lambda: self._es.indices.refresh(index=index))

    async def _index_vectors(self, index: str) -> tuple[int, Similarity]:
        """The vector size and similarity of a physical index, from its mapping (cached)."""
        if index in self._vectors:
            return self._vectors[index]
        try:
            response = await self._call(
                f"get mapping of {index}", lambda: self._es.indices.get_mapping(index=index)
            )
        except RequestFailed as exc:
            if exc.status == 404:
                raise StoreError(f"index {index} does not exist") from exc
            raise
        (mapping,) = response.body.values()
        try:
            vector = mapping["mappings"]["properties"][VECTOR_FIELD]
            found = (int(vector["dims"]), Similarity(vector.get("similarity", Similarity.COSINE)))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"index {index} has no {VECTOR_FIELD} field with dims and a similarity") from exc
        self._vectors[index] = found
        return found

    async def delete_document(self, index: str, document_id: str) -> None:
        """Delete-by-query sees only refreshed documents, and skips chunks that change under it
        (a write racing the delete): refresh first, and go again while conflicts remain."""
        what = f"delete chunks of {document_id} from {index}"

        async def delete() -> bool | None:
            """True once done; None while chunks changed under it."""
            try:
                await self.make_visible(index)
                response = await self._call(
                    what,
                    lambda: self._es.delete_by_query(
                        index=index,
                        query={"term": {"document_id": document_id}},
                        conflicts="proceed",
                        refresh=True,
                    ),
                )
            except RequestFailed as exc:
                if exc.status == 404:
                    return True  # no index, nothing to delete
                raise
            check_by_query(what, response.body, "chunks")
            return None if response.body.get("version_conflicts") else True

        if await self._retries.poll(delete) is None:
            raise StoreUnavailableError(f"{what}: chunks kept changing during the delete")

    # -- reads --------------------------------------------------------------------------

    async def knn(
        self, kb: KnowledgeBase, vector: Vector, k: int, document_ids: Sequence[str] | None = None
    ) -> list[RankedChunk]:
        dims = kb.spec.embedding.dimensions
        if vector.ndim != 1 or vector.shape[0] != dims:
            raise EmbeddingMismatchError(
                f"query vector has shape {vector.shape}; knowledge base {kb.name} needs {dims} dimensions"
            )
        if k > MAX_KNN:
            raise ValueError(f"k must be at most {MAX_KNN}, got {k}")
        if k < 1 or (document_ids is not None and not document_ids):
            return []
        # The live index's similarity rules the query, whatever the spec says now (index_drift).
        similarity = self._alias_similarity.get(kb.index_alias, kb.spec.index.similarity)
        check_vector(np.asarray(vector, dtype=np.float32), similarity, "the query vector")
        knn: dict[str, Any] = {
            "field": VECTOR_FIELD,
            "query_vector": vector.tolist(),
            "k": k,
            "num_candidates": min(max(k * 10, 100), MAX_KNN),
        }
        if document_ids is not None:
            knn["filter"] = {"terms": {"document_id": list(document_ids)}}
        try:
            return await self._search(kb, "kNN search", knn=knn, size=k)
        except RequestFailed as exc:
            # The live index refused the vector (its similarity may be one this process has not
            # seen yet): the same report as the check above.
            if exc.status == 400 and "similarity" in str(exc):
                raise InvalidVectorError(f"the query vector: {exc}") from exc
            raise

    async def text_search(
        self, kb: KnowledgeBase, query: str, k: int, document_ids: Sequence[str] | None = None
    ) -> list[RankedChunk]:
        if k > MAX_KNN:
            raise ValueError(f"k must be at most {MAX_KNN}, got {k}")
        if k < 1 or not query.strip() or (document_ids is not None and not document_ids):
            return []
        match: dict[str, Any] = {"match": {"text": {"query": query}}}
        if document_ids is not None:
            match = {"bool": {"must": [match], "filter": [{"terms": {"document_id": list(document_ids)}}]}}
        return await self._search(kb, "text search", query=match, size=k)

    async def _search(self, kb: KnowledgeBase, what: str, **body: Any) -> list[RankedChunk]:
        alias = kb.index_alias
        try:
            response = await self._call(
                f"{what} in {alias}",
                lambda: self._es.search(
                    index=alias, source={"excludes": [VECTOR_FIELD]}, track_total_hits=False, **body
                ),
            )
        except RequestFailed as exc:
            if exc.status == 404:
                return []  # no index yet: an empty knowledge base
            raise
        shards, timed_out = response.body.get("_shards", {}), response.body.get("timed_out")
        if shards.get("failed") or timed_out:
            logger.warning(
                "%s in %s returned partial results (%s of %s shards failed, timed out: %s)",
                what, alias, shards.get("failed", 0), shards.get("total", "?"), timed_out,
            )  # fmt: skip
        return [
            RankedChunk(chunk=_chunk(hit["_source"]), score=float(hit["_score"]))
            for hit in response.body["hits"]["hits"]
        ]

    async def get_chunk(self, kb: KnowledgeBase, chunk_id: str) -> ChunkRecord | None:
        alias = kb.index_alias
        try:
            # GET through an alias works while it points at exactly one index, which
            # `activate` keeps true; GET is real-time, so no refresh is needed.
            response = await self._call(
                f"get chunk {chunk_id} from {alias}",
                lambda: self._es.get(index=alias, id=chunk_id, source_excludes=[VECTOR_FIELD]),
            )
        except RequestFailed as exc:
            if exc.status == 404:
                return None  # no such chunk, or no index at all
            raise
        return _chunk(response.body["_source"])

    async def count(self, kb: KnowledgeBase, document_id: str | None = None) -> int:
        alias = kb.index_alias
        query = {"term": {"document_id": document_id}} if document_id is not None else None
        try:
            response = await self._call(
                f"count chunks in {alias}", lambda: self._es.count(index=alias, query=query)
            )
        except RequestFailed as exc:
            if exc.status == 404:
                return 0
            raise
        return int(response.body["count"])

    async def close(self) -> None:
        """Nothing to release: the client is its opener's (kubechat.stores.open), who closes it."""


def _source(chunk: ChunkRecord, dims: int, similarity: Similarity, index: str) -> dict[str, Any]:
    vector = chunk.vector
    if vector is None:
        raise StoreError(f"chunk {chunk.chunk_id} has no vector")
    if vector.ndim != 1 or vector.shape[0] != dims:
        raise EmbeddingMismatchError(
            f"chunk {chunk.chunk_id} has a vector of shape {vector.shape}; "
            f"index {index} holds {dims} dimensions"
        )
    check_vector(np.asarray(vector, dtype=np.float32), similarity, f"the vector of chunk {chunk.chunk_id}")
    return {
        "document_id": chunk.document_id,
        "document_name": chunk.document_name,
        "ordinal": chunk.ordinal,
        "text": chunk.text,
        "page": chunk.page,
        "section": chunk.section,
        VECTOR_FIELD: vector.tolist(),
    }


def _chunk(source: Mapping[str, Any]) -> ChunkRecord:
    page = source.get("page")
    return ChunkRecord(
        document_id=source["document_id"],
        document_name=source.get("document_name", ""),
        ordinal=int(source["ordinal"]),
        text=source.get("text", ""),
        page=int(page) if page is not None else None,
        section=source.get("section") or "",
    )
