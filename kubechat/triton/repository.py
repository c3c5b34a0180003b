"""Pure renderers of Triton model repositories from ChatModel resources.

Used by the embedded launcher (which writes the files to disk) and by the operator (which puts
them in a ConfigMap). Every rendered `config.pbtxt` is parsed back into Triton's own
`ModelConfig` protobuf, so a typo fails here rather than in a tritonserver log.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kubechat.core.resources import Backend, Capability, ChatModel, ModelSource
from kubechat.triton import contract


class RenderError(ValueError):
    """A ChatModel cannot be rendered into a model repository."""


@dataclass(frozen=True)
class ModelArtifacts:
    """Where a model's prepared files live on the Triton host (see kubechat.triton.artifacts)."""

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
    # Relative path inside the model directory -> rendered text to write there.
    texts: dict[str, str] = field(default_factory=dict)


# model-repo/ holds the python-backend model code, one folder per backend.
MODEL_CODE_ROOT = Path(__file__).resolve().parents[2] / "model-repo"
_PYTHON_MODEL_CODE = {
    Backend.TRANSFORMERS: "transformers_llm",
    Backend.SENTENCE_TRANSFORMERS: "sentence_embedder",
    Backend.SYNTHETIC: "synthetic_tokens",
    Backend.TESSERACT: "image_describer",
    Backend.TOOL_CALLER: "tool_caller",
}
# The image describer's OCR languages (tesseract codes joined by `+`). Fixed until a ChatModel
# needs another: each language is one more Debian package (tesseract-ocr-<code>) in the image.
OCR_LANGUAGES = "eng"
# Largest image (width x height) the image describer decodes; larger ones get an error response.
MAX_IMAGE_PIXELS = 25_000_000  # a 6000x4000 photo fits


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
    """Render one CPU python-backend model (chat, embedder, image describer, synthetic or tool-calling
    test model)."""
    spec = model.spec
    backend = spec.engine.backend
    if backend not in _PYTHON_MODEL_CODE:
        raise RenderError(
            f"ChatModel {model.name}: backend {backend} needs a GPU (TensorRT-LLM) and cannot "
            "run in the embedded runtime"
        )
    header = f'name: "{model.name}"\nbackend: "python"\nmax_batch_size: {spec.engine.max_batch_size}\n'
    params = {"max_input_tokens": str(spec.engine.max_input_tokens)}
    code_folder = _PYTHON_MODEL_CODE[backend]
    if backend is Backend.SENTENCE_TRANSFORMERS and Capability.RERANK in spec.capabilities:
        # A reranker: a cross-encoder checkpoint scores pairs itself, a bi-encoder by cosine.
        body = (
            _tensor_block("input", contract.RERANK_INPUTS)
            + _tensor_block("output", contract.RERANK_OUTPUTS)
            + "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}\n"
        )
        params["checkpoint_dir"] = artifacts.checkpoint_dir
        code_folder = "sentence_reranker"
    elif backend is Backend.SENTENCE_TRANSFORMERS:
        if artifacts.embedding_dimensions <= 0:
            raise RenderError(f"ChatModel {model.name}: embedding dimensions are unknown")
        body = (
            _tensor_block("input", contract.embed_inputs())
            + _tensor_block("output", contract.embed_outputs(artifacts.embedding_dimensions))
            # No queue delay: a question's embedding should not wait for others; requests that
            # queue while the model is busy are still batched together.
            + "dynamic_batching {\n  max_queue_delay_microseconds: 0\n}\n"
        )
        params["checkpoint_dir"] = artifacts.checkpoint_dir
    else:
        inputs: tuple[contract.TensorSpec, ...] = (
            contract.VISION_INPUTS if backend is Backend.TESSERACT else contract.CHAT_INPUTS
        )
        outputs: tuple[contract.TensorSpec, ...] = contract.CHAT_OUTPUTS
        if backend is Backend.TRANSFORMERS:  # log probabilities from its decoding loop
            inputs, outputs = inputs + contract.LOGPROB_INPUTS, outputs + contract.LOGPROB_OUTPUTS
        body = (
            "model_transaction_policy {\n  decoupled: true\n}\n"
            + _tensor_block("input", inputs)
            + _tensor_block("output", outputs)
        )
        params["max_output_tokens"] = str(spec.engine.max_output_tokens)
        if backend is Backend.TESSERACT:
            params["languages"] = OCR_LANGUAGES
            params["max_image_pixels"] = str(MAX_IMAGE_PIXELS)
        elif backend is Backend.TRANSFORMERS:
            params["checkpoint_dir"] = artifacts.checkpoint_dir
            params["checkpoint_file"] = artifacts.checkpoint_file
            # TensorRT-LLM's preprocessing/postprocessing models read the same parameter name.
            params["tokenizer_dir"] = artifacts.tokenizer_dir
        elif backend is Backend.TOOL_CALLER:
            # The test model writes its calls in the format the API parses them in.
            params["tool_format"] = str(spec.tools.format)
        else:
            params["token_delay_ms"] = str(spec.engine.synthetic_token_delay_ms)
    text = header + body + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
    text += _parameters(params)
    parse_model_config(text)
    code = MODEL_CODE_ROOT / code_folder / "model.py"
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
        for relative, text in model.texts.items():
            (model_dir / relative).write_text(text)


# --- TensorRT-LLM (GPU) -------------------------------------------------------------------------
#
# In-container layout of a GPU model's pod. The operator's manifests mount and fill these paths,
# and the rendered files below point at them, so they are defined once, here.
MODELS_ROOT = "/models"  # the weight cache (a PersistentVolumeClaim), read-only in serving pods
WEIGHTS_DIR = f"{MODELS_ROOT}/weights"  # huggingFace/s3 sources are fetched here
TOKENIZER_DIR = f"{MODELS_ROOT}/tokenizer"  # spec.tokenizer, when fetched separately
REPOSITORY_DIR = f"{MODELS_ROOT}/repository"  # CPU models: the repository their init step writes
STATE_DIR = f"{MODELS_ROOT}/state"  # CPU models: exported tokenizers and other prepared files
GPU_REPOSITORY_DIR = "/opt/kubechat/repository"  # GPU models: the ConfigMap, mounted as is
SCRATCH_DIR = "/scratch"  # GPU models: a writable emptyDir for HF_HOME and compile caches
SOURCE_PVC_DIR = "/mnt/source"  # a pvc source, mounted read-only
TOKENIZER_PVC_DIR = "/mnt/tokenizer"  # a pvc tokenizer, mounted read-only

# The GPU model: kubechat's own python-backend model running TensorRT-LLM's LLM API (PyTorch
# backend) on a Hugging Face checkpoint, after upstream's triton_backend/all_models/llmapi
# (NVIDIA/TensorRT-LLM). Its code and its copied detokenizer, shipped as text.
LLMAPI_MODEL_CODE = Path(__file__).resolve().parent / "llmapi_model.py"
TEXT_STREAM_CODE = Path(__file__).resolve().parents[1] / "engines" / "text_stream.py"
LLM_ARGS_FILE = "model.yaml"  # upstream's name for the LLM API's arguments beside model.py

# KV-cache blocks hold this many tokens (the LLM API's default tokens_per_block); chunked prefill
# cuts prompts into chunks of max_num_tokens, which must be a multiple of it.
KV_BLOCK_TOKENS = 32
# Quantization formats the LLM API reads from a pre-quantized checkpoint (ModelOpt's
# hf_quant_config.json or the config's quantization_config): nothing to calibrate in the pod.
PREQUANTIZED_FORMATS = ("fp8", "nvfp4", "int4_awq")


def pod_source_dir(source: ModelSource, fetched_dir: str, pvc_dir: str) -> str:
    """Where a huggingFace/s3 (fetched into `fetched_dir`) or pvc (mounted at `pvc_dir`) source is."""
    if source.pvc is None:
        return fetched_dir
    sub = source.pvc.path.strip("/")
    return f"{pvc_dir}/{sub}" if sub else pvc_dir


@dataclass(frozen=True)
class TensorrtLlmPaths:
    """Where a GPU model's checkpoint and tokenizer are inside its pod."""

    checkpoint_dir: str
    tokenizer_dir: str


def tensorrtllm_paths(model: ChatModel) -> TensorrtLlmPaths:
    spec = model.spec
    checkpoint = pod_source_dir(spec.source, WEIGHTS_DIR, SOURCE_PVC_DIR)
    tokenizer = checkpoint
    separate = spec.tokenizer
    if separate is not None:
        if separate.package is not None:
            raise RenderError(f"ChatModel {model.name}: a GPU model cannot take its tokenizer from a package")
        if separate.pvc is not None or separate.hugging_face is not None or separate.s3 is not None:
            tokenizer = pod_source_dir(separate, TOKENIZER_DIR, TOKENIZER_PVC_DIR)
    return TensorrtLlmPaths(checkpoint_dir=checkpoint, tokenizer_dir=tokenizer)


def max_num_tokens(model: ChatModel) -> int:
    """Tokens one engine step may take: the spec's, or by default the longest prompt (capped at
    8192: chunked prefill feeds longer ones in chunks), rounded up to whole KV-cache blocks."""
    engine = model.spec.engine
    wanted = engine.max_num_tokens or min(engine.max_input_tokens, 8192)
    return -(-wanted // KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS


def llm_args(model: ChatModel) -> dict[str, object]:
    """The LLM API's arguments (tensorrt_llm.LLM(**args)), as `model.yaml` carries them."""
    spec = model.spec
    engine = spec.engine
    paths = tensorrtllm_paths(model)
    return {
        "model": paths.checkpoint_dir,
        "tokenizer": paths.tokenizer_dir,
        "backend": "pytorch",
        "dtype": engine.dtype,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "max_batch_size": engine.max_batch_size,
        "max_input_len": engine.max_input_tokens,
        "max_seq_len": engine.max_input_tokens + engine.max_output_tokens,
        "max_num_tokens": max_num_tokens(model),
        # A prompt longer than max_num_tokens is prefilled in chunks instead of being refused.
        "enable_chunked_prefill": True,
        "kv_cache_config": {
            # Prefix caching: a conversation's earlier turns (and the system prompt) are not
            # prefilled again.
            "enable_block_reuse": engine.kv_cache_reuse,
            "free_gpu_memory_fraction": engine.kv_cache_free_gpu_memory_fraction,
        },
        # Structured outputs (response_format): the guided_decoding_* inputs are enforced.
        "guided_decoding_backend": "xgrammar",
        # The pod is offline: the checkpoint is local and nothing may be fetched.
        "trust_remote_code": False,
    }


def check_quantization(model: ChatModel) -> None:
    """Refuse a quantization that would need calibration: the pod is offline and has no data."""
    quantization = model.spec.engine.quantization
    if quantization != "none" and quantization not in PREQUANTIZED_FORMATS:
        raise RenderError(
            f"ChatModel {model.name}: quantization {quantization} needs calibration, which kubechat never "
            "runs in the pod (it is offline); publish a pre-quantized checkpoint "
            f"({', '.join(PREQUANTIZED_FORMATS)}) and point spec.source at it"
        )


def render_tensorrtllm_model(model: ChatModel) -> RenderedModel:
    """Render one GPU ChatModel as one Triton model: kubechat's LLM API model behind the chat
    contract, decoupled, with `model.yaml` (the LLM API's arguments) beside its code.

    No engine is built: the LLM API's PyTorch backend loads the Hugging Face checkpoint itself.
    """
    spec = model.spec
    engine = spec.engine
    if engine.backend is not Backend.TENSORRTLLM:
        raise RenderError(f"ChatModel {model.name}: backend {engine.backend} is not tensorrtllm")
    if spec.source.hugging_face is not None and spec.source.hugging_face.file:
        raise RenderError(
            f"ChatModel {model.name}: TensorRT-LLM loads a whole checkpoint folder; "
            "source.huggingFace.file names a single file"
        )
    if engine.prebuilt:
        raise RenderError(
            f"ChatModel {model.name}: prebuilt TensorRT engines are no longer served: TensorRT-LLM removed "
            "its engine backend; point spec.source at the Hugging Face checkpoint (pre-quantized if need be)"
        )
    check_quantization(model)
    text = (
        f'name: "{model.name}"\nbackend: "python"\nmax_batch_size: {engine.max_batch_size}\n'
        "model_transaction_policy {\n  decoupled: true\n}\n"
        + _tensor_block("input", contract.CHAT_INPUTS)
        + _tensor_block("output", contract.CHAT_OUTPUTS)
        # One instance drives the whole GPU engine (upstream's layout): the LLM API batches.
        + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
        + _parameters(
            {
                "llm_args": LLM_ARGS_FILE,
                "max_output_tokens": str(engine.max_output_tokens),
                "max_queue_size": str(engine.max_queue_size),
            }
        )
    )
    parse_model_config(text)
    llm_yaml = yaml.safe_dump(llm_args(model), sort_keys=True)
    return RenderedModel(
        name=model.name,
        config_pbtxt=text,
        files={"1/model.py": LLMAPI_MODEL_CODE, "1/text_stream.py": TEXT_STREAM_CODE},
        texts={f"1/{LLM_ARGS_FILE}": llm_yaml},
    )
