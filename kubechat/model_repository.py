"""Pure renderers of Triton model repositories from ChatModel resources.

Used by the embedded launcher (which writes the files to disk) and by the operator (which puts
them in a ConfigMap). Every rendered `config.pbtxt` is parsed back into Triton's own
`ModelConfig` protobuf, so a typo fails here rather than in a tritonserver log.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kubechat import triton_contract as contract
from kubechat.resources import Backend, ChatModel


class RenderError(ValueError):
    """A ChatModel cannot be rendered into a model repository."""


@dataclass(frozen=True)
class ModelArtifacts:
    """Where a model's prepared files live on the Triton host (see kubechat.embedded.artifacts)."""

    checkpoint_dir: str = ""
    checkpoint_file: str = ""  # a single-file checkpoint inside checkpoint_dir (GGUF)
    tokenizer_dir: str = ""
    embedding_dimensions: int = 0


@dataclass(frozen=True)
class RenderedModel:
    name: str
    config_pbtxt: str
    # Relative path inside the model directory -> source file to copy there.
    files: dict[str, Path] = field(default_factory=dict)


# model-repo/ holds the python-backend model code, one folder per backend.
MODEL_CODE_ROOT = Path(__file__).resolve().parent.parent / "model-repo"
_PYTHON_MODEL_CODE = {
    Backend.TRANSFORMERS: "transformers_llm",
    Backend.SENTENCE_TRANSFORMERS: "sentence_embedder",
    Backend.SYNTHETIC: "synthetic_tokens",
}


def _tensor_block(kind: str, tensors: tuple[contract.TensorSpec, ...]) -> str:
    entries = []
    for t in tensors:
        dims = ", ".join(str(d) for d in t.dims)
        optional = "\n    optional: true" if t.optional else ""
        entries.append(
            f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {dims} ]{optional}\n  }}'
        )
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def _parameters(values: dict[str, str]) -> str:
    return "".join(
        f'parameters {{\n  key: "{k}"\n  value: {{ string_value: "{_escape(v)}" }}\n}}\n'
        for k, v in sorted(values.items())
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def parse_model_config(config_pbtxt: str) -> model_config_pb2.ModelConfig:
    """Parse config text into Triton's ModelConfig protobuf; raise RenderError if it is invalid."""
    try:
        return text_format.Parse(config_pbtxt, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise RenderError(f"invalid config.pbtxt: {exc}") from exc


def render_python_model(model: ChatModel, artifacts: ModelArtifacts) -> RenderedModel:
    """Render one CPU python-backend model (chat, embedder or synthetic benchmark model)."""
    spec = model.spec
    backend = spec.engine.backend
    if backend not in _PYTHON_MODEL_CODE:
        raise RenderError(
            f"ChatModel {model.name}: backend {backend} needs a GPU (TensorRT-LLM) and cannot "
            "run in the embedded runtime"
        )
    header = f'name: "{model.name}"\nbackend: "python"\nmax_batch_size: {spec.engine.max_batch_size}\n'
    params = {"max_input_tokens": str(spec.engine.max_input_tokens)}
    if backend is Backend.SENTENCE_TRANSFORMERS:
        if artifacts.embedding_dimensions <= 0:
            raise RenderError(f"ChatModel {model.name}: embedding dimensions are unknown")
        body = (
            _tensor_block("input", contract.embed_inputs())
            + _tensor_block("output", contract.embed_outputs(artifacts.embedding_dimensions))
            + "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}\n"
        )
        params["checkpoint_dir"] = artifacts.checkpoint_dir
    else:
        body = (
            "model_transaction_policy {\n  decoupled: true\n}\n"
            + _tensor_block("input", contract.CHAT_INPUTS)
            + _tensor_block("output", contract.CHAT_OUTPUTS)
        )
        params["max_output_tokens"] = str(spec.engine.max_output_tokens)
        if backend is Backend.TRANSFORMERS:
            params["checkpoint_dir"] = artifacts.checkpoint_dir
            params["checkpoint_file"] = artifacts.checkpoint_file
            # TensorRT-LLM's preprocessing/postprocessing models read the same parameter name.
            params["tokenizer_dir"] = artifacts.tokenizer_dir
        else:
            params["token_delay_ms"] = str(spec.engine.synthetic_token_delay_ms)
    text = header + body + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
    text += _parameters(params)
    parse_model_config(text)
    code = MODEL_CODE_ROOT / _PYTHON_MODEL_CODE[backend] / "model.py"
    return RenderedModel(name=model.name, config_pbtxt=text, files={"1/model.py": code})


def write_model_repository(rendered: list[RenderedModel], root: Path) -> None:
    """Write rendered models under `root`, replacing whatever a previous render left there."""
    root.mkdir(parents=True, exist_ok=True)
    wanted = {m.name for m in rendered}
    for stale in root.iterdir():
        if stale.is_dir() and stale.name not in wanted:
            shutil.rmtree(stale)
    for model in rendered:
        model_dir = root / model.name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        (model_dir / "config.pbtxt").write_text(model.config_pbtxt)
        for relative, source in model.files.items():
            (model_dir / relative).write_bytes(source.read_bytes())
