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


# --- TensorRT-LLM (GPU) -------------------------------------------------------------------------
#
# In-container layout of a GPU model's pod. The operator's manifests mount and fill these paths,
# and the config.pbtxt files below point at them, so they are defined once, here.
MODELS_ROOT = "/models"  # the pod's weights/engine volume
WEIGHTS_DIR = f"{MODELS_ROOT}/weights"  # huggingFace/s3 sources are fetched here
TOKENIZER_DIR = f"{MODELS_ROOT}/tokenizer"  # spec.tokenizer, when fetched separately
ENGINE_DIR = f"{MODELS_ROOT}/engine"  # the engine built at start-up
REPOSITORY_DIR = f"{MODELS_ROOT}/repository"  # the Triton model repository tritonserver serves
XGRAMMAR_TOKENIZER_INFO = f"{MODELS_ROOT}/xgrammar/xgrammar_tokenizer_info.json"
STATE_DIR = f"{MODELS_ROOT}/state"  # CPU models: exported tokenizers and other prepared files
SOURCE_PVC_DIR = "/mnt/source"  # a pvc source, mounted read-only
TOKENIZER_PVC_DIR = "/mnt/tokenizer"  # a pvc tokenizer, mounted read-only

# The templates these configs follow: triton_backend/all_models/inflight_batcher_llm of
# github.com/NVIDIA/TensorRT-LLM (formerly triton-inference-server/tensorrtllm_backend). NVIDIA's
# preprocessing/postprocessing model.py read their inputs and outputs from these configs, so
# the sub-model interfaces are kept whole; only the ensemble's interface is kubechat's own.
_LOGITS_DATA_TYPE = "TYPE_FP32"
_FEATURES_DATA_TYPE = "TYPE_FP16"  # encoder_input_features / prompt_embedding_table


@dataclass(frozen=True)
class _Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False
    ragged: bool = False  # allow_ragged_batch
    scalar: bool = False  # reshape: { shape: [ ] } (the backend reads one value per request)


def _t(name: str, data_type: str, *dims: int, opt: bool = False, ragged: bool = False) -> _Tensor:
    return _Tensor(name, data_type, dims, optional=opt, ragged=ragged)


def _scalar(name: str, data_type: str, *, opt: bool = True) -> _Tensor:
    return _Tensor(name, data_type, (1,), optional=opt, scalar=True)


_PREPROCESSING_INPUTS = (
    _t("QUERY", "TYPE_STRING", 1),
    _t("DECODER_QUERY", "TYPE_STRING", 1, opt=True),
    _t("IMAGE_BYTES", "TYPE_UINT8", -1, -1, -1, -1, opt=True),
    _t("IMAGE_URL", "TYPE_STRING", -1, opt=True),
    _t("IMAGE_SIZES", "TYPE_INT64", -1, 2, opt=True),
    _t("VIDEO_BYTES", "TYPE_UINT8", -1, -1, -1, -1, opt=True),
    _t("REQUEST_OUTPUT_LEN", "TYPE_INT32", 1),
    _t("BAD_WORDS_DICT", "TYPE_STRING", -1, opt=True),
    _t("STOP_WORDS_DICT", "TYPE_STRING", -1, opt=True),
    _t("EMBEDDING_BIAS_WORDS", "TYPE_STRING", -1, opt=True),
    _t("EMBEDDING_BIAS_WEIGHTS", "TYPE_FP32", -1, opt=True),
    _t("END_ID", "TYPE_INT32", 1, opt=True),
    _t("PAD_ID", "TYPE_INT32", 1, opt=True),
    _t("PROMPT_TABLE_EXTRA_ID", "TYPE_UINT64", 1, opt=True),
)
_PREPROCESSING_OUTPUTS = (
    _t("INPUT_ID", "TYPE_INT32", -1),
    _t("REQUEST_INPUT_LEN", "TYPE_INT32", 1),
    _t("DECODER_INPUT_ID", "TYPE_INT32", -1),
    _t("REQUEST_DECODER_INPUT_LEN", "TYPE_INT32", 1),
    _t("BAD_WORDS_IDS", "TYPE_INT32", 2, -1),
    _t("STOP_WORDS_IDS", "TYPE_INT32", 2, -1),
    _t("EMBEDDING_BIAS", "TYPE_FP32", -1),
    _t("REQUEST_OUTPUT_LEN", "TYPE_INT32", -1),
    _t("OUT_END_ID", "TYPE_INT32", 1),
    _t("OUT_PAD_ID", "TYPE_INT32", 1),
    _t("OUT_PROMPT_TABLE_EXTRA_IDS", "TYPE_UINT64", -1),
    _t("PIXEL_VALUES", "TYPE_FP16", -1, -1, -1, -1),
    _t("ASPECT_RATIO_IDS", "TYPE_INT64", -1),
    _t("ASPECT_RATIO_MASK", "TYPE_INT64", -1, -1),
    _t("CROSS_ATTENTION_MASK", "TYPE_INT64", -1, -1, -1),
    _t("IMAGE_SIZES", "TYPE_INT64", -1, 2),
    _t("IS_VIDEO_INPUT", "TYPE_BOOL", 1),
    _t("ATTENTION_MASK", "TYPE_INT64", -1),
    _t("IMAGE_GRID_THW", "TYPE_INT64", 3),
    _t("VISION_INPUT_ID", "TYPE_INT32", -1),
)
_TRTLLM_INPUTS = (
    _t("input_ids", "TYPE_INT32", -1, opt=True, ragged=True),
    _t("encoder_input_features", _FEATURES_DATA_TYPE, -1, -1, opt=True, ragged=True),
    _scalar("encoder_output_lengths", "TYPE_INT32"),
    _scalar("input_lengths", "TYPE_INT32", opt=False),
    _scalar("request_output_len", "TYPE_INT32", opt=False),
    _scalar("num_return_sequences", "TYPE_INT32"),
    _t("draft_input_ids", "TYPE_INT32", -1, opt=True, ragged=True),
    _t("decoder_input_ids", "TYPE_INT32", -1, opt=True, ragged=True),
    _scalar("decoder_input_lengths", "TYPE_INT32"),
    _t("draft_logits", _LOGITS_DATA_TYPE, -1, -1, opt=True, ragged=True),
    _scalar("draft_acceptance_threshold", "TYPE_FP32"),
    _scalar("end_id", "TYPE_INT32"),
    _scalar("pad_id", "TYPE_INT32"),
    _t("stop_words_list", "TYPE_INT32", 2, -1, opt=True, ragged=True),
    _t("bad_words_list", "TYPE_INT32", 2, -1, opt=True, ragged=True),
    _t("embedding_bias", "TYPE_FP32", -1, opt=True, ragged=True),
    _scalar("beam_width", "TYPE_INT32"),
    _scalar("temperature", "TYPE_FP32"),
    _scalar("runtime_top_k", "TYPE_INT32"),
    _scalar("runtime_top_p", "TYPE_FP32"),
    _scalar("runtime_top_p_min", "TYPE_FP32"),
    _scalar("runtime_top_p_decay", "TYPE_FP32"),
    _scalar("runtime_top_p_reset_ids", "TYPE_INT32"),
    _scalar("len_penalty", "TYPE_FP32"),
    _scalar("early_stopping", "TYPE_BOOL"),
    _scalar("repetition_penalty", "TYPE_FP32"),
    _scalar("min_tokens", "TYPE_INT32"),
    _scalar("beam_search_diversity_rate", "TYPE_FP32"),
    _scalar("presence_penalty", "TYPE_FP32"),
    _scalar("frequency_penalty", "TYPE_FP32"),
    _scalar("seed", "TYPE_UINT64"),
    _scalar("return_log_probs", "TYPE_BOOL"),
    _scalar("return_context_logits", "TYPE_BOOL"),
    _scalar("return_generation_logits", "TYPE_BOOL"),
    _scalar("return_perf_metrics", "TYPE_BOOL"),
    _scalar("return_num_input_tokens", "TYPE_BOOL"),
    _scalar("return_num_output_tokens", "TYPE_BOOL"),
    _scalar("exclude_input_in_output", "TYPE_BOOL"),
    _scalar("stop", "TYPE_BOOL"),
    _scalar("streaming", "TYPE_BOOL"),
    _t("prompt_embedding_table", _FEATURES_DATA_TYPE, -1, -1, opt=True, ragged=True),
    _t("prompt_table_extra_ids", "TYPE_UINT64", -1, opt=True, ragged=True),
    _scalar("prompt_vocab_size", "TYPE_INT32"),
    _t("cross_attention_mask", "TYPE_BOOL", -1, -1, opt=True, ragged=True),
    _t("mrope_rotary_cos_sin", "TYPE_FP32", -1, opt=True),
    _t("mrope_position_deltas", "TYPE_INT64", 1, opt=True),
    _scalar("lora_task_id", "TYPE_UINT64"),
    _t("lora_weights", "TYPE_FP16", -1, -1, opt=True, ragged=True),
    _t("lora_config", "TYPE_INT32", -1, 3, opt=True, ragged=True),
    _t("context_phase_params", "TYPE_UINT8", -1, opt=True, ragged=True),
    _t("skip_cross_attn_blocks", "TYPE_BOOL", 1, opt=True, ragged=True),
    _t("retention_token_range_starts", "TYPE_INT32", -1, opt=True, ragged=True),
    _t("retention_token_range_ends", "TYPE_INT32", -1, opt=True, ragged=True),
    _t("retention_token_range_priorities", "TYPE_INT32", -1, opt=True, ragged=True),
    _t("retention_token_range_durations_ms", "TYPE_INT32", -1, opt=True, ragged=True),
    _t("retention_decode_priority", "TYPE_INT32", 1, opt=True, ragged=True),
    _t("retention_decode_duration_ms", "TYPE_INT32", 1, opt=True, ragged=True),
    _t("guided_decoding_guide_type", "TYPE_STRING", 1, opt=True, ragged=True),
    _t("guided_decoding_guide", "TYPE_STRING", 1, opt=True, ragged=True),
    _t("lookahead_window_size", "TYPE_INT32", 1, opt=True, ragged=True),
    _t("lookahead_ngram_size", "TYPE_INT32", 1, opt=True, ragged=True),
    _t("lookahead_verification_set_size", "TYPE_INT32", 1, opt=True, ragged=True),
)
_TRTLLM_OUTPUTS = (
    _t("output_ids", "TYPE_INT32", -1, -1),
    _t("sequence_length", "TYPE_INT32", -1),
    _t("cum_log_probs", "TYPE_FP32", -1),
    _t("output_log_probs", "TYPE_FP32", -1, -1),
    _t("context_logits", _LOGITS_DATA_TYPE, -1, -1),
    _t("generation_logits", _LOGITS_DATA_TYPE, -1, -1, -1),
    _t("batch_index", "TYPE_INT32", 1),
    _t("sequence_index", "TYPE_INT32", 1),
    _t("context_phase_params", "TYPE_UINT8", -1),
    _t("kv_cache_alloc_new_blocks", "TYPE_INT32", 1),
    _t("kv_cache_reused_blocks", "TYPE_INT32", 1),
    _t("kv_cache_alloc_total_blocks", "TYPE_INT32", 1),
    _t("arrival_time_ns", "TYPE_INT64", 1),
    _t("first_scheduled_time_ns", "TYPE_INT64", 1),
    _t("first_token_time_ns", "TYPE_INT64", 1),
    _t("last_token_time_ns", "TYPE_INT64", 1),
    _t("acceptance_rate", "TYPE_FP32", 1),
    _t("total_accepted_draft_tokens", "TYPE_INT32", 1),
    _t("total_draft_tokens", "TYPE_INT32", 1),
    _t("num_input_tokens", "TYPE_INT32", 1),
    _t("num_output_tokens", "TYPE_INT32", 1),
)
_POSTPROCESSING_INPUTS = (
    _t("TOKENS_BATCH", "TYPE_INT32", -1, -1),
    _t("SEQUENCE_LENGTH", "TYPE_INT32", -1),
)
_POSTPROCESSING_OUTPUTS = (_t("OUTPUT", "TYPE_STRING", -1),)

# Ensemble inputs beyond kubechat's chat contract, as NVIDIA's ensemble names them.
_ENSEMBLE_EXTRA_INPUTS = (
    _t("bad_words", "TYPE_STRING", -1, opt=True),
    _t("pad_id", "TYPE_INT32", 1, opt=True),
    _t("length_penalty", "TYPE_FP32", 1, opt=True),
    _t("min_tokens", "TYPE_INT32", 1, opt=True),
    _t("presence_penalty", "TYPE_FP32", 1, opt=True),
    _t("frequency_penalty", "TYPE_FP32", 1, opt=True),
)

# Ensemble steps: (sub-model role, {sub-model tensor: ensemble tensor} in, ... out). Tensors with
# a leading underscore are internal to the ensemble; the rest are its inputs and outputs.
_PREPROCESSING_IN = {
    "QUERY": contract.TEXT_INPUT,
    "REQUEST_OUTPUT_LEN": contract.MAX_TOKENS,
    "BAD_WORDS_DICT": "bad_words",
    "STOP_WORDS_DICT": contract.STOP_WORDS,
    "END_ID": contract.END_ID,
    "PAD_ID": "pad_id",
}
_PREPROCESSING_OUT = {
    "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN",
    "INPUT_ID": "_INPUT_ID",
    "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN",
    "STOP_WORDS_IDS": "_STOP_WORDS_IDS",
    "BAD_WORDS_IDS": "_BAD_WORDS_IDS",
    "EMBEDDING_BIAS": "_EMBEDDING_BIAS",
    "OUT_END_ID": "_PREPROCESSOR_END_ID",
    "OUT_PAD_ID": "_PREPROCESSOR_PAD_ID",
}
_TRTLLM_IN = {
    "input_ids": "_INPUT_ID",
    "input_lengths": "_REQUEST_INPUT_LEN",
    "request_output_len": "_REQUEST_OUTPUT_LEN",
    "exclude_input_in_output": contract.EXCLUDE_INPUT_IN_OUTPUT,
    "end_id": "_PREPROCESSOR_END_ID",
    "pad_id": "_PREPROCESSOR_PAD_ID",
    "embedding_bias": "_EMBEDDING_BIAS",
    "stop_words_list": "_STOP_WORDS_IDS",
    "bad_words_list": "_BAD_WORDS_IDS",
    "runtime_top_k": contract.TOP_K,
    "runtime_top_p": contract.TOP_P,
    "temperature": contract.TEMPERATURE,
    "len_penalty": "length_penalty",
    "repetition_penalty": contract.REPETITION_PENALTY,
    "min_tokens": "min_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    # kubechat's contract keeps the older ensemble name; the backend's input is `seed`.
    "seed": contract.RANDOM_SEED,
    "streaming": contract.STREAM,
    # Structured outputs: TensorRT-LLM's guided decoding (xgrammar), the engine the CPU model uses.
    "guided_decoding_guide_type": contract.GUIDED_DECODING_GUIDE_TYPE,
    "guided_decoding_guide": contract.GUIDED_DECODING_GUIDE,
}
_TRTLLM_OUT = {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH"}
_POSTPROCESSING_IN = {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"}
_POSTPROCESSING_OUT = {"OUTPUT": contract.TEXT_OUTPUT}


@dataclass(frozen=True)
class TensorrtLlmNames:
    """Triton model names of one ChatModel's ensemble and its three steps.

    The ensemble carries the ChatModel's name, the one the API calls. Triton names are free-form
    strings used as directory names; RFC 1123 labels plus these suffixes are always valid.
    """

    ensemble: str
    preprocessing: str
    trtllm: str
    postprocessing: str

    def all(self) -> tuple[str, str, str, str]:
        return (self.preprocessing, self.trtllm, self.postprocessing, self.ensemble)


def tensorrtllm_names(model: ChatModel) -> TensorrtLlmNames:
    return TensorrtLlmNames(
        ensemble=model.name,
        preprocessing=f"{model.name}-preprocessing",
        trtllm=f"{model.name}-trtllm",
        postprocessing=f"{model.name}-postprocessing",
    )


@dataclass(frozen=True)
class TensorrtLlmPaths:
    """Where a GPU model's checkpoint, engine and tokenizer are inside its pod."""

    checkpoint_dir: str  # what the source puts in the pod (a checkpoint, or a prebuilt engine)
    engine_dir: str
    tokenizer_dir: str
    # The tokenizer's vocabulary as xgrammar reads it, written by the build-engine step: the C++
    # backend's guided decoding needs it (NVIDIA's generate_xgrammar_tokenizer_info.py output).
    xgrammar_tokenizer_info: str = XGRAMMAR_TOKENIZER_INFO


def pod_source_dir(source: ModelSource, fetched_dir: str, pvc_dir: str) -> str:
    """Where a huggingFace/s3 (fetched into `fetched_dir`) or pvc (mounted at `pvc_dir`) source is."""
    if source.pvc is None:
        return fetched_dir
    sub = source.pvc.path.strip("/")
    return f"{pvc_dir}/{sub}" if sub else pvc_dir


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
    engine = checkpoint if spec.engine.prebuilt else ENGINE_DIR
    return TensorrtLlmPaths(checkpoint_dir=checkpoint, engine_dir=engine, tokenizer_dir=tokenizer)


def _io_block(kind: str, tensors: tuple[_Tensor, ...]) -> str:
    entries = []
    for t in tensors:
        lines = [
            f'    name: "{t.name}"',
            f"    data_type: {t.data_type}",
            f"    dims: [ {', '.join(map(str, t.dims))} ]",
        ]
        if t.scalar:
            lines.append("    reshape: { shape: [ ] }")
        if t.optional:
            lines.append("    optional: true")
        if t.ragged:
            lines.append("    allow_ragged_batch: true")
        entries.append("  {\n" + "\n".join(lines) + "\n  }")
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def _header(name: str, backend: str, max_batch_size: int) -> str:
    return f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: {max_batch_size}\n'


def _cpu_instances(count: int) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: KIND_CPU\n  }}\n]\n"


def _dynamic_batching(max_batch_size: int) -> str:
    # No queue delay: a chat request should never wait for others to fill a batch.
    return (
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {max_batch_size} ]\n"
        "  max_queue_delay_microseconds: 0\n"
        "}\n"
    )


def _step(model_name: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return (
        f'    {{\n      model_name: "{model_name}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"
    )


def _ensemble_inputs() -> tuple[_Tensor, ...]:
    contract_inputs = tuple(_t(s.name, s.data_type, *s.dims, opt=s.optional) for s in contract.CHAT_INPUTS)
    return contract_inputs + _ENSEMBLE_EXTRA_INPUTS


def render_tensorrtllm_models(model: ChatModel) -> list[RenderedModel]:
    """Render TensorRT-LLM's in-flight-batching ensemble for one GPU ChatModel.

    Four Triton models: `<name>-preprocessing` (tokenizer, NVIDIA's python model),
    `<name>-trtllm` (the engine, tensorrtllm backend, decoupled), `<name>-postprocessing`
    (detokenizer, NVIDIA's python model) and the ensemble `<name>` that chains them behind
    kubechat's chat contract. Only config.pbtxt is rendered: NVIDIA's model.py files ship in the
    TensorRT-LLM Triton image and the pod's init step copies them into place.
    """
    spec = model.spec
    engine = spec.engine
    if engine.backend is not Backend.TENSORRTLLM:
        raise RenderError(f"ChatModel {model.name}: backend {engine.backend} is not tensorrtllm")
    if spec.source.hugging_face is not None and spec.source.hugging_face.file:
        raise RenderError(
            f"ChatModel {model.name}: TensorRT-LLM builds from a whole checkpoint folder; "
            "source.huggingFace.file names a single file"
        )
    names = tensorrtllm_names(model)
    paths = tensorrtllm_paths(model)
    batch = engine.max_batch_size
    processing_instances = min(4, batch)

    preprocessing = (
        _header(names.preprocessing, "python", batch)
        + _dynamic_batching(batch)
        + _io_block("input", _PREPROCESSING_INPUTS)
        + _io_block("output", _PREPROCESSING_OUTPUTS)
        + _cpu_instances(processing_instances)
        + _parameters(
            {
                "tokenizer_dir": paths.tokenizer_dir,
                # The API sends the prompt with the chat template applied (BOS included).
                "add_special_tokens": "false",
                "multimodal_model_path": "",
                "gpt_model_path": paths.engine_dir,
            }
        )
    )
    trtllm = (
        _header(names.trtllm, "tensorrtllm", batch)
        + "model_transaction_policy {\n  decoupled: true\n}\n"
        + _dynamic_batching(batch)
        + _io_block("input", _TRTLLM_INPUTS)
        + _io_block("output", _TRTLLM_OUTPUTS)
        # The backend places the engine on the GPUs itself; the instance is a CPU-side handle.
        + _cpu_instances(1)
        + _parameters(
            {
                "max_beam_width": "1",
                "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
                "gpt_model_type": "inflight_fused_batching",
                "gpt_model_path": paths.engine_dir,
                "batch_scheduler_policy": "guaranteed_no_evict",
                "kv_cache_free_gpu_mem_fraction": str(engine.kv_cache_free_gpu_memory_fraction),
                "exclude_input_in_output": "true",
                # How often the backend looks for cancelled requests (a client that left).
                "cancellation_check_period_ms": "100",
                "executor_worker_path": "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker",
                "tokenizer_dir": paths.tokenizer_dir,
                # Structured outputs (response_format): the guided_decoding_* inputs are enforced.
                "guided_decoding_backend": "xgrammar",
                "xgrammar_tokenizer_info_path": paths.xgrammar_tokenizer_info,
            }
        )
    )
    postprocessing = (
        _header(names.postprocessing, "python", batch)
        # Each streamed token is its own request here; with several instances, responses would
        # overtake each other and the deltas arrive shuffled (seen with Triton 2.51).
        + "dynamic_batching {\n  preserve_ordering: true\n}\n"
        + _io_block("input", _POSTPROCESSING_INPUTS)
        + _io_block("output", _POSTPROCESSING_OUTPUTS)
        + _cpu_instances(processing_instances)
        + _parameters({"tokenizer_dir": paths.tokenizer_dir, "skip_special_tokens": "true"})
    )
    steps = ",\n".join(
        [
            _step(names.preprocessing, _PREPROCESSING_IN, _PREPROCESSING_OUT),
            _step(names.trtllm, _TRTLLM_IN, _TRTLLM_OUT),
            _step(names.postprocessing, _POSTPROCESSING_IN, _POSTPROCESSING_OUT),
        ]
    )
    # No model_transaction_policy: Triton marks an ensemble decoupled itself when a step is.
    ensemble = (
        f'name: "{names.ensemble}"\nplatform: "ensemble"\nmax_batch_size: {batch}\n'
        + _io_block("input", _ensemble_inputs())
        + _io_block("output", tuple(_t(s.name, s.data_type, *s.dims) for s in contract.CHAT_OUTPUTS))
        + "ensemble_scheduling {\n  step [\n"
        + steps
        + "\n  ]\n}\n"
    )
    rendered = [
        RenderedModel(names.preprocessing, preprocessing),
        RenderedModel(names.trtllm, trtllm),
        RenderedModel(names.postprocessing, postprocessing),
        RenderedModel(names.ensemble, ensemble),
    ]
    for item in rendered:
        parse_model_config(item.config_pbtxt)
    return rendered
