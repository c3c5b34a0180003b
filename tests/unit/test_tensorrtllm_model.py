"""Tests of the GPU renderer (kubechat.triton.repository.render_tensorrtllm_model): TensorRT-LLM's
LLM API model behind kubechat's chat contract, checked against upstream's llmapi files."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml
from tritonclient.grpc import model_config_pb2

from kubechat.core.resources import ChatModel, parse_chat_model
from kubechat.triton import contract
from kubechat.triton.repository import (
    LLMAPI_MODEL_CODE,
    SOURCE_PVC_DIR,
    TEXT_STREAM_CODE,
    TOKENIZER_DIR,
    TOKENIZER_PVC_DIR,
    WEIGHTS_DIR,
    RenderError,
    llm_args,
    max_num_tokens,
    parse_model_config,
    render_tensorrtllm_model,
    write_model_repository,
)

# Upstream's llmapi model, read from NVIDIA/TensorRT-LLM (the route tensorrtllm_backend's
# docs/llmapi.md documents, at triton-inference-server/tensorrtllm_backend@0b9d7d5):
# - triton_backend/all_models/llmapi/tensorrt_llm/config.pbtxt @ 0a71057313ec0626527e164a8fc0205c5822e2f5:
#   backend "python", one KIND_CPU instance, input `text_input` TYPE_STRING, output `text_output`
#   TYPE_STRING; `streaming` is an optional TYPE_BOOL input.
# - triton_backend/all_models/llmapi/tensorrt_llm/1/model.yaml @ 0ebb1536ac12bbe27201185de960df3ab00bcecc:
#   the LLM API's keyword arguments beside model.py: `model`, `backend: "pytorch"`,
#   `tensor_parallel_size`, `pipeline_parallel_size`.
# - tensorrt_llm/llmapi/llm_args.py @ 0004396720054fd8e205cbf616f21f0b57c6b412: BaseLlmArgs is a
#   strict model (unknown keys are an error) with these fields, and KvCacheConfig these.
UPSTREAM_BACKEND = "python"
UPSTREAM_TEXT_INPUT = ("text_input", model_config_pb2.DataType.TYPE_STRING)
UPSTREAM_TEXT_OUTPUT = ("text_output", model_config_pb2.DataType.TYPE_STRING)
UPSTREAM_LLM_BACKEND = "pytorch"
UPSTREAM_LLM_ARGS = {
    "model",
    "tokenizer",
    "backend",
    "dtype",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_batch_size",
    "max_input_len",
    "max_seq_len",
    "max_num_tokens",
    "enable_chunked_prefill",
    "kv_cache_config",
    "guided_decoding_backend",
    "trust_remote_code",
}
UPSTREAM_KV_CACHE_ARGS = {"enable_block_reuse", "free_gpu_memory_fraction", "max_tokens"}


def _gpu_model(name: str = "llama", engine: dict[str, Any] | None = None, **spec: Any) -> ChatModel:
    document: dict[str, Any] = {
        "apiVersion": "kubechat.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": name},
        "spec": {
            "engine": {"backend": "tensorrtllm", "maxBatchSize": 32, **(engine or {})},
            "resources": {"gpus": 1},
            "source": {"huggingFace": {"repo": "meta-llama/Llama-3.1-8B-Instruct"}},
            **spec,
        },
    }
    return parse_chat_model(document)


def _config(model: ChatModel) -> model_config_pb2.ModelConfig:
    return parse_model_config(render_tensorrtllm_model(model).config_pbtxt)


def test_one_python_model_named_after_the_chat_model() -> None:
    """No ensemble and no engine: one python-backend model, as upstream's llmapi route has."""
    rendered = render_tensorrtllm_model(_gpu_model())
    config = parse_model_config(rendered.config_pbtxt)
    assert rendered.name == config.name == "llama"
    assert config.backend == UPSTREAM_BACKEND
    assert config.model_transaction_policy.decoupled
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.Kind.KIND_CPU]
    assert config.max_batch_size == 32


def test_the_chat_contract_keeps_upstreams_text_tensors() -> None:
    """kubechat's contract, whose text tensors are upstream's: the API speaks to GPU and CPU alike."""
    config = _config(_gpu_model())
    inputs = {t.name: t for t in config.input}
    outputs = {t.name: t for t in config.output}
    assert set(inputs) == {t.name for t in contract.CHAT_INPUTS}
    assert (UPSTREAM_TEXT_INPUT[0], inputs[UPSTREAM_TEXT_INPUT[0]].data_type) == UPSTREAM_TEXT_INPUT
    assert (UPSTREAM_TEXT_OUTPUT[0], outputs[UPSTREAM_TEXT_OUTPUT[0]].data_type) == UPSTREAM_TEXT_OUTPUT
    required = {t.name for t in config.input if not t.optional}
    assert required == {contract.TEXT_INPUT, contract.MAX_TOKENS}


def test_the_model_ships_its_code_its_detokenizer_and_its_llm_arguments(tmp_path: Path) -> None:
    """model.py, text_stream.py and model.yaml land beside each other in the version folder."""
    rendered = render_tensorrtllm_model(_gpu_model())
    write_model_repository([rendered], tmp_path)
    version = tmp_path / "llama" / "1"
    assert (version / "model.py").read_bytes() == LLMAPI_MODEL_CODE.read_bytes()
    assert (version / "text_stream.py").read_bytes() == TEXT_STREAM_CODE.read_bytes()
    args = yaml.safe_load((version / "model.yaml").read_text())
    assert args == llm_args(_gpu_model())
    params = {k: v.string_value for k, v in _config(_gpu_model()).parameters.items()}
    assert params["llm_args"] == "model.yaml"


def test_shipped_code_needs_only_what_the_tensorrt_llm_image_has() -> None:
    """The model runs where kubechat is not installed: it imports no kubechat module, and the
    detokenizer copied beside it only the standard library."""
    allowed_model = {"asyncio", "json", "os", "threading", "collections", "typing", "numpy", "yaml"}
    allowed_model |= {"__future__", "triton_python_backend_utils", "text_stream", "tensorrt_llm"}
    for path, allowed in (
        (LLMAPI_MODEL_CODE, allowed_model),
        (TEXT_STREAM_CODE, {"__future__", "collections", "typing"}),
    ):
        tree = ast.parse(path.read_text())
        imported = {
            (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]  # type: ignore[union-attr]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert imported <= allowed, f"{path.name} imports {imported - allowed}"


def test_llm_arguments_are_upstreams_and_carry_the_spec() -> None:
    """Every key is an LLM API argument (upstream's llm_args are strict) and says what the spec says."""
    model = _gpu_model(
        engine={"maxInputTokens": 4096, "maxOutputTokens": 1024, "kvCacheFreeGpuMemoryFraction": 0.8},
    )
    args = llm_args(model)
    assert set(args) <= UPSTREAM_LLM_ARGS
    kv_cache = args["kv_cache_config"]
    assert isinstance(kv_cache, dict) and set(kv_cache) <= UPSTREAM_KV_CACHE_ARGS
    assert args["backend"] == UPSTREAM_LLM_BACKEND
    assert args["model"] == args["tokenizer"] == WEIGHTS_DIR
    assert args["max_batch_size"] == 32
    assert args["max_input_len"] == 4096
    assert args["max_seq_len"] == 4096 + 1024
    assert args["kv_cache_config"] == {"enable_block_reuse": True, "free_gpu_memory_fraction": 0.8}


def test_long_prompts_are_prefilled_in_chunks() -> None:
    """Chunked prefill is on, so prompts up to maxInputTokens are accepted whatever max_num_tokens."""
    long_prompts = _gpu_model(engine={"maxInputTokens": 32768})
    args = llm_args(long_prompts)
    assert args["enable_chunked_prefill"] is True
    assert args["max_num_tokens"] == 8192  # capped: the rest of a long prompt comes in chunks
    assert max_num_tokens(_gpu_model(engine={"maxInputTokens": 1000})) == 1024  # whole KV blocks
    assert max_num_tokens(_gpu_model(engine={"maxNumTokens": 16384})) == 16384


def test_prefix_caching_is_on_by_default_and_can_be_turned_off() -> None:
    off = llm_args(_gpu_model(engine={"kvCacheReuse": False}))
    assert off["kv_cache_config"]["enable_block_reuse"] is False  # type: ignore[index]


def test_the_queue_bound_reaches_the_model() -> None:
    params = {
        k: v.string_value for k, v in _config(_gpu_model(engine={"maxQueueSize": 3})).parameters.items()
    }
    assert params["max_queue_size"] == "3"
    assert _gpu_model().spec.engine.max_queue_size == 32


@pytest.mark.parametrize("quantization", ["fp8", "nvfp4", "int4_awq"])
def test_pre_quantized_checkpoints_are_served_as_they_are(quantization: str) -> None:
    """The LLM API reads the checkpoint's own quantization: nothing is passed, nothing calibrated."""
    model = _gpu_model(engine={"quantization": quantization})
    args = llm_args(model)
    assert "quant_config" not in args and "calib_config" not in args
    render_tensorrtllm_model(model)


def test_a_quantization_that_needs_calibration_is_refused() -> None:
    with pytest.raises(RenderError, match="needs calibration"):
        render_tensorrtllm_model(_gpu_model(engine={"quantization": "int8"}))


def test_prebuilt_engines_are_refused_with_the_reason() -> None:
    model = _gpu_model(
        engine={"prebuilt": True},
        source={"s3": {"uri": "s3://models/engines/llama/"}},
        tokenizer={"s3": {"uri": "s3://models/tokenizers/llama/"}},
    )
    with pytest.raises(RenderError, match="removed its engine backend"):
        render_tensorrtllm_model(model)


def test_separate_and_pvc_tokenizers_are_read_where_they_are() -> None:
    separate = _gpu_model(tokenizer={"s3": {"uri": "s3://models/tokenizers/llama/"}})
    assert llm_args(separate)["tokenizer"] == TOKENIZER_DIR
    on_pvc = _gpu_model(
        source={"pvc": {"claimName": "models", "path": "/llama/hf/"}},
        tokenizer={"pvc": {"claimName": "tokenizers", "path": "llama"}},
    )
    assert llm_args(on_pvc)["model"] == f"{SOURCE_PVC_DIR}/llama/hf"
    assert llm_args(on_pvc)["tokenizer"] == f"{TOKENIZER_PVC_DIR}/llama"


def test_tensor_parallelism_reaches_the_llm_api() -> None:
    model = _gpu_model(engine={"tensorParallelSize": 2}, resources={"gpus": 2})
    assert llm_args(model)["tensor_parallel_size"] == 2


def test_other_backends_and_single_files_are_refused() -> None:
    cpu = parse_chat_model(
        {
            "apiVersion": "kubechat.io/v1alpha1",
            "kind": "ChatModel",
            "metadata": {"name": "s"},
            "spec": {"engine": {"backend": "synthetic"}},
        }
    )
    with pytest.raises(RenderError, match="not tensorrtllm"):
        render_tensorrtllm_model(cpu)
    with pytest.raises(RenderError, match="single file"):
        render_tensorrtllm_model(_gpu_model(source={"huggingFace": {"repo": "x/y", "file": "model.gguf"}}))


def test_structured_outputs_are_enforced_with_xgrammar() -> None:
    """response_format reaches the model as the guided decoding inputs; the LLM API enforces them."""
    inputs = {t.name: t for t in _config(_gpu_model()).input}
    for name in (contract.GUIDED_DECODING_GUIDE_TYPE, contract.GUIDED_DECODING_GUIDE):
        assert model_config_pb2.DataType.Name(inputs[name].data_type) == "TYPE_STRING"
        assert inputs[name].optional
    assert llm_args(_gpu_model())["guided_decoding_backend"] == "xgrammar"
