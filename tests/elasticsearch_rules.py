"""What a real Elasticsearch 9 refuses, for the HTTP-level fake of the Elasticsearch tests.

No Elasticsearch can run on these machines, so the store tests script answers with
pytest-httpserver. A fake that accepts whatever it is sent would let a store send what a real
cluster refuses; `Refusals` gives the fake the cluster's refusals for what kubechat could get
wrong, each with the answer Elasticsearch gives and where the rule lives upstream (paths in
github.com/elastic/elasticsearch unless said otherwise, as of 9.x):

* Creating an index (`PUT /<index>`):
  - a text field's analyzer that is neither built in nor declared in `settings.analysis`:
    400 mapper_parsing_exception "Failed to parse mapping: analyzer [x] has not been configured in
    mappings" (server/.../index/mapper/FieldMapper.java, Parameter.analyzerParam);
  - a custom analyzer naming a tokenizer, filter or char_filter the cluster does not have:
    400 illegal_argument_exception "Custom Analyzer [a] failed to find filter under name [f]"
    (server/.../index/analysis/CustomAnalyzerProvider.java); what it has is the built-ins of
    modules/analysis-common/.../CommonAnalysisPlugin.java and the server's AnalysisModule;
  - an unknown `index_options.type`: 400 mapper_parsing_exception "Unknown vector index options
    type [t] for field [vector]"; a parameter a type does not take (`m` on `flat`): "unsupported
    parameters"; int4 types with odd dimensions, bbq types under 64
    (server/.../index/mapper/vectors/DenseVectorFieldMapper.java, parseIndexOptions,
    VectorIndexType.supportsDimension, validateDimension);
  - `m` over 512 or `ef_construction` over 3200: Lucene's Lucene99HnswVectorsFormat constructor
    ("maxConn must be positive and less than or equal to 512; maxConn=...", "beamWidth must be
    ..."), which Elasticsearch calls when it builds the field's vector format from the mapping.
    The fake refuses at creation, the earliest a cluster could; a real one may only fail the
    first write. kubechat's CRD refuses both before either happens.
* Writing a vector (`_bulk` items) and searching with one (`knn`): NaN or infinite values, a
  dot_product vector that is not unit length (|‖v‖² - 1| ≥ 1e-3), a zero cosine vector
  (DenseVectorFieldMapper.FloatElement: checkVectorBounds, checkVectorMagnitude,
  Element.isUnitVector). Items fail with 400 document_parsing_exception; a search with
  400 search_phase_execution_exception caused by illegal_argument_exception.
* A server of an older major (`server_major=8`) refuses every request of elasticsearch-py 9,
  which asks for `compatible-with=9`: 400 media_type_header_exception "Invalid media-type value
  on headers [Accept]" caused by "Accept version must be either version 8 or 7, but found 9"
  (server/.../rest/RestCompatibleVersionHelper.java in 8.x).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request

from kubechat.core.resources import BUILTIN_ANALYZERS

# CommonAnalysisPlugin.getTokenizers() and the server's `standard`.
TOKENIZERS = frozenset({
    "standard", "classic", "letter", "lowercase", "whitespace", "keyword", "uax_url_email", "thai",
    "ngram", "edge_ngram", "pattern", "simple_pattern", "simple_pattern_split", "char_group",
    "path_hierarchy",
})  # fmt: skip
# CommonAnalysisPlugin.getTokenFilters() that need no settings of their own, and the server's.
TOKEN_FILTERS = frozenset({
    "apostrophe", "arabic_normalization", "arabic_stem", "asciifolding", "bengali_normalization",
    "brazilian_stem", "cjk_bigram", "cjk_width", "classic", "czech_stem", "decimal_digit",
    "delimited_payload", "dutch_stem", "edge_ngram", "fingerprint", "flatten_graph", "french_stem",
    "german_normalization", "german_stem", "hindi_normalization", "indic_normalization", "kstem",
    "length", "limit", "lowercase", "min_hash", "ngram", "persian_normalization", "porter_stem",
    "remove_duplicates", "reverse", "russian_stem", "scandinavian_folding",
    "scandinavian_normalization", "serbian_normalization", "snowball", "sorani_normalization",
    "stemmer", "trim", "unique", "uppercase", "word_delimiter", "word_delimiter_graph", "stop",
    "shingle",
})  # fmt: skip
CHAR_FILTERS = frozenset({"html_strip"})
INDEX_TYPES = frozenset({
    "hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat", "bbq_disk",
})  # fmt: skip
UNIT_TOLERANCE = 1e-3


def error_body(status: int, error_type: str, reason: str, **extra: Any) -> dict[str, Any]:
    """An error answer as Elasticsearch writes it (ElasticsearchException.generateFailureXContent)."""
    cause = {"type": error_type, "reason": reason, **extra}
    root = extra.get("caused_by") or cause
    return {"error": {"root_cause": [root], **cause}, "status": status}


def vector_refusal(vector: Any, similarity: str) -> str | None:
    """Elasticsearch's reason for refusing a float vector under `similarity`, or None."""
    if not isinstance(vector, list) or not all(isinstance(v, int | float) for v in vector):
        return None
    preview = "[" + ", ".join(str(float(v)) for v in vector[:5]) + (", ...]" if len(vector) >= 5 else "]")
    for index, value in enumerate(vector):
        if math.isnan(value) or math.isinf(value):
            kind = "NaN" if math.isnan(value) else "infinite"
            return (
                f"element_type [float] vectors do not support {kind} values but found [{value}] at dim "
                f"[{index}]; Preview of invalid vector: {preview}"
            )
    squared = sum(float(v) * float(v) for v in vector)
    if similarity == "dot_product" and abs(squared - 1.0) >= UNIT_TOLERANCE:
        reason = "The [dot_product] similarity can only be used with unit-length vectors."
        return f"{reason} Preview of invalid vector: {preview}"
    if similarity == "cosine" and squared == 0.0:
        reason = "The [cosine] similarity does not support vectors with zero magnitude."
        return f"{reason} Preview of invalid vector: {preview}"
    return None


@dataclass
class Refusals:
    """The refusals of one fake cluster. It learns each index's vector mapping from the create
    requests it lets through and the mappings it is scripted to answer with."""

    server_major: int = 9
    similarities: dict[str, str] = field(default_factory=dict)  # index or alias -> similarity

    def learn(self, body: Any) -> None:
        """Remember the vector similarity of every index an answer (GET index, GET mapping) describes."""
        if not isinstance(body, Mapping):
            return
        for name, info in body.items():
            if not isinstance(info, Mapping):
                continue
            vector = ((info.get("mappings") or {}).get("properties") or {}).get("vector") or {}
            if "similarity" in vector:
                self.similarities[name] = vector["similarity"]
                for alias in info.get("aliases") or {}:
                    self.similarities[alias] = vector["similarity"]

    def refuse(self, request: Request, body: Any) -> tuple[int, Any] | None:
        """The answer a real cluster gives instead of the scripted one, or None."""
        accept = request.headers.get("Accept", "")
        if self.server_major < 9 and "compatible-with=9" in accept:
            headers = "Accept, Content-Type" if request.get_data() else "Accept"
            return 400, error_body(
                400, "media_type_header_exception", f"Invalid media-type value on headers [{headers}]",
                caused_by={
                    "type": "status_exception",
                    "reason": f"Accept version must be either version 8 or 7, but found 9. Accept={accept}",
                },
            )  # fmt: skip
        parts = [p for p in request.path.split("/") if p]
        if request.method == "PUT" and len(parts) == 1 and not parts[0].startswith("_"):
            return self._create(parts[0], body)
        if len(parts) == 2 and parts[1] == "_search" and isinstance(body, Mapping) and "knn" in body:
            similarity = self.similarities.get(parts[0])
            reason = similarity and vector_refusal(body["knn"].get("query_vector"), similarity)
            if reason:
                cause = {"type": "illegal_argument_exception", "reason": reason}
                return 400, error_body(
                    400, "search_phase_execution_exception", "all shards failed", phase="dfs",
                    grouped=True, failed_shards=[], caused_by=cause,
                )  # fmt: skip
        return None

    def refuse_items(
        self, request: Request, lines: list[Any], scripted: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """A `_bulk` answer with the items a real cluster would refuse failed as it fails them."""
        parts = [p for p in request.path.split("/") if p]
        default_index = parts[0] if len(parts) == 2 else None
        items = list(scripted.get("items", []))
        refused = False
        for position, (action, source) in enumerate(zip(lines[::2], lines[1::2], strict=True)):
            op, target = next(iter(action.items()))
            index = target.get("_index", default_index)
            similarity = self.similarities.get(index or "")
            reason = similarity and vector_refusal((source or {}).get("vector"), similarity)
            if reason and position < len(items):
                items[position] = {
                    op: {
                        "_index": index, "_id": target.get("_id"), "status": 400,
                        "error": {
                            "type": "document_parsing_exception",
                            "reason": f"[1:1] failed to parse: {reason}",
                            "caused_by": {"type": "illegal_argument_exception", "reason": reason},
                        },
                    }
                }  # fmt: skip
                refused = True
        return {**scripted, "errors": bool(scripted.get("errors")) or refused, "items": items}

    def _create(self, index: str, body: Any) -> tuple[int, Any] | None:
        body = body or {}
        mappings = body.get("mappings") or {}
        settings = body.get("settings") or {}
        declared = ((settings.get("analysis") or {}).get("analyzer")) or {}
        for name, analyzer in declared.items():
            if analyzer.get("type", "custom") != "custom":
                continue
            components = [
                ("tokenizer", [analyzer.get("tokenizer", "")], TOKENIZERS),
                ("char_filter", analyzer.get("char_filter") or [], CHAR_FILTERS),
                ("filter", analyzer.get("filter") or [], TOKEN_FILTERS),
            ]
            for kind, names, known in components:
                for component in names:
                    if component not in known:
                        reason = f"Custom Analyzer [{name}] failed to find {kind} under name [{component}]"
                        return 400, error_body(400, "illegal_argument_exception", reason)
        properties = mappings.get("properties") or {}
        for field_name, mapping in properties.items():
            analyzer = mapping.get("analyzer")
            if analyzer is not None and analyzer not in BUILTIN_ANALYZERS and analyzer not in declared:
                reason = f"analyzer [{analyzer}] has not been configured in mappings"
                return 400, _mapping_failure(reason)
            if mapping.get("type") == "dense_vector":
                refusal = self._vector_mapping(field_name, mapping)
                if refusal is not None:
                    return refusal
        vector = properties.get("vector") or {}
        if "similarity" in vector:
            self.similarities[index] = vector["similarity"]
            for alias in body.get("aliases") or {}:
                self.similarities[alias] = vector["similarity"]
        return None

    def _vector_mapping(self, field_name: str, mapping: Mapping[str, Any]) -> tuple[int, Any] | None:
        options = dict(mapping.get("index_options") or {})
        if not options:
            return None
        kind = options.pop("type", None)
        if kind not in INDEX_TYPES:
            return 400, _mapping_failure(
                f"Unknown vector index options type [{kind}] for field [{field_name}]"
            )
        hnsw = kind.endswith("hnsw")
        m, ef = options.pop("m", 16), options.pop("ef_construction", 100)
        options.pop("confidence_interval", None)
        options.pop("rescore_vector", None)
        if not hnsw and ("m" in mapping["index_options"] or "ef_construction" in mapping["index_options"]):
            unsupported = {k: v for k, v in mapping["index_options"].items() if k in ("m", "ef_construction")}
            return 400, _mapping_failure(
                f"Mapping definition for [{field_name}] has unsupported parameters:  {unsupported}"
            )
        if options:
            return 400, _mapping_failure(
                f"Mapping definition for [{field_name}] has unsupported parameters:  {options}"
            )
        dims = int(mapping.get("dims") or 0)
        if kind.startswith("int4") and dims % 2:
            return 400, _mapping_failure(f"{kind} only supports even dimensions; provided={dims}")
        if kind.startswith("bbq") and dims < 64:
            return 400, _mapping_failure(f"{kind} does not support dimensions fewer than 64; provided={dims}")
        if hnsw and not 0 < int(m) <= 512:
            reason = f"maxConn must be positive and less than or equal to 512; maxConn={m}"
            return 400, error_body(400, "illegal_argument_exception", reason)
        if hnsw and not 0 < int(ef) <= 3200:
            reason = f"beamWidth must be positive and less than or equal to 3200; beamWidth={ef}"
            return 400, error_body(400, "illegal_argument_exception", reason)
        return None


def _mapping_failure(reason: str) -> dict[str, Any]:
    return error_body(
        400, "mapper_parsing_exception", f"Failed to parse mapping: {reason}",
        caused_by={"type": "illegal_argument_exception", "reason": reason},
    )  # fmt: skip


def parse_body(request: Request) -> Any:
    """A request's JSON body, a list of NDJSON lines, or None."""
    data = request.get_data()
    if not data:
        return None
    if "ndjson" in (request.content_type or ""):
        return [json.loads(line) for line in data.decode().splitlines() if line]
    return json.loads(data)
