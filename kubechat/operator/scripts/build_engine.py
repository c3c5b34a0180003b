"""kubechat build-engine step: lay out the Triton model repository, then build the TensorRT-LLM
engine unless the volume already holds one for this spec.

Runs as the GPU pod's init container under the TensorRT-LLM image's python3, where kubechat is
not installed: the operator ships this file's text in the ChatModel's ConfigMap
(kubechat.operator.manifests). The environment comes from manifests._build_engine_container.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

env = os.environ


def assemble_repository() -> None:
    source = Path(env["KUBECHAT_REPOSITORY_SOURCE"])
    target = Path(env["KUBECHAT_REPOSITORY_DIR"])
    templates = Path(env["KUBECHAT_TEMPLATES_DIR"])
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)  # dereferences the ConfigMap volume's symlinks
    for model in target.iterdir():
        (model / "1").mkdir(exist_ok=True)
    for role in ("preprocessing", "postprocessing"):
        code = templates / role / "1" / "model.py"
        if not code.is_file():
            sys.exit(
                f"kubechat: {code} is not in this image; point the operator's "
                "KUBECHAT_OPERATOR_TRTLLM_MODEL_TEMPLATES_DIR at NVIDIA's inflight_batcher_llm folder"
            )
        shutil.copy(code, target / env[f"KUBECHAT_{role.upper()}_MODEL"] / "1" / "model.py")


def build_engine() -> None:
    if env["KUBECHAT_PREBUILT"] == "true":
        return
    engine = Path(env["KUBECHAT_ENGINE_DIR"])
    marker = engine / ".kubechat-engine-key"
    key = env["KUBECHAT_ENGINE_KEY"]
    if marker.is_file() and marker.read_text() == key:
        print(f"kubechat: engine {key} is already built in {engine}")
        return
    from tensorrt_llm.llmapi import BuildConfig, QuantAlgo, QuantConfig

    try:  # TensorRT-LLM 1.x: the plain LLM is the PyTorch backend; this one builds engines
        from tensorrt_llm._tensorrt_engine import LLM
    except ImportError:  # 0.x: the LLM API builds TensorRT engines
        from tensorrt_llm import LLM
    algorithms = {"fp8": QuantAlgo.FP8, "int8": QuantAlgo.W8A16, "int4_awq": QuantAlgo.W4A16_AWQ}
    extra: dict[str, Any] = {}
    if env["KUBECHAT_QUANTIZATION"] in algorithms:
        extra["quant_config"] = QuantConfig(quant_algo=algorithms[env["KUBECHAT_QUANTIZATION"]])
    build_config = BuildConfig(
        max_batch_size=int(env["KUBECHAT_MAX_BATCH_SIZE"]),
        max_input_len=int(env["KUBECHAT_MAX_INPUT_LEN"]),
        max_seq_len=int(env["KUBECHAT_MAX_SEQ_LEN"]),
    )
    partial = engine.with_name(engine.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"kubechat: building engine {key} from {env['KUBECHAT_CHECKPOINT_DIR']}", flush=True)
    with LLM(
        model=env["KUBECHAT_CHECKPOINT_DIR"],
        tensor_parallel_size=int(env["KUBECHAT_TENSOR_PARALLEL_SIZE"]),
        dtype=env["KUBECHAT_DTYPE"],
        build_config=build_config,
        **extra,
    ) as llm:
        llm.save(str(partial))
    (partial / marker.name).write_text(key)
    shutil.rmtree(engine, ignore_errors=True)
    partial.rename(engine)  # a crash mid-build never leaves a half engine that looks complete


def write_xgrammar_tokenizer_info() -> None:
    """The tokenizer's vocabulary for the backend's guided decoding (structured outputs), as
    NVIDIA's examples/generate_xgrammar_tokenizer_info.py writes it, unless the volume holds it
    for this spec already (the engine key covers the tokenizer's source)."""
    target = Path(env["KUBECHAT_XGRAMMAR_TOKENIZER_INFO"])
    marker = target.with_name(target.name + ".key")
    key = env["KUBECHAT_ENGINE_KEY"]
    if target.is_file() and marker.is_file() and marker.read_text() == key:
        return
    from tensorrt_llm.llmapi.tokenizer import _xgrammar_tokenizer_info
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(env["KUBECHAT_TOKENIZER_DIR"])
    target.write_text(json.dumps(_xgrammar_tokenizer_info(tokenizer)))
    marker.write_text(key)


if __name__ == "__main__":
    assemble_repository()
    build_engine()
    write_xgrammar_tokenizer_info()
