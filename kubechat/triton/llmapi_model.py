"""kubechat's TensorRT-LLM model for Triton: the LLM API (PyTorch backend) behind the chat contract.

Rendered into a GPU ChatModel's model repository as `<name>/1/model.py` (shipped as text in the
ConfigMap, like the rest of the repository), with `text_stream.py` (kubechat.engines.text_stream)
and `model.yaml` (the LLM API's arguments, rendered from the spec by kubechat.triton.repository)
beside it. It runs in NVIDIA's Triton TensorRT-LLM image, where kubechat is not installed:
standard library, numpy, yaml, Triton's python backend and tensorrt_llm only.

It follows upstream's `triton_backend/all_models/llmapi/tensorrt_llm/1/model.py` (NVIDIA/
TensorRT-LLM): the LLM's own asyncio loop on a thread, `generate_async` per request, abort on
cancellation. It differs where kubechat needs it to (docs/design-decisions.md):

* the tensors are kubechat's chat contract (kubechat.triton.contract: `text_input`, `max_tokens`,
  ... -> `text_output`, decoupled), so the API's client is the same for CPU and GPU models;
* every streamed response carries the new text only (upstream's sends the whole text so far),
  detokenized incrementally from the token ids by text_stream.TextStream: correct spaces for
  SentencePiece tokenizers and no U+FFFD from multi-byte characters split across tokens;
* a stream ends with an empty final response (flags only), as TensorRT-LLM's backends do; the
  API's client asks Triton for it (`enable_empty_final_response`);
* the queue is bounded: beyond `max_batch_size` generating plus `max_queue_size` waiting, a
  request is refused at once with Triton's own queue-full error, which the API answers with
  `busy` (HTTP 429 on /v1) instead of letting it wait.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
import yaml

# Copied beside this file by the renderer (kubechat/engines/text_stream.py).
from text_stream import TextStream  # type: ignore[import-not-found]

# Triton's own message for a full queue (its dynamic batcher's), which the API's client maps to
# `busy`: one mapping for CPU models (Triton's queue) and this model (its own queue).
QUEUE_FULL_MESSAGE = "Exceeds maximum queue size"

GUIDE_TYPES = {"json": "json_object", "json_schema": "json", "regex": "regex", "ebnf_grammar": "grammar"}


def _scalar(request: Any, name: str, default: Any) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)
    if value.size == 0:
        return default
    item = value[0]
    return item.decode("utf-8") if isinstance(item, bytes) else item.item()


def _strings(request: Any, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


def _text_response(text: str) -> Any:
    data = np.array([[text.encode("utf-8")]], dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", data)])


def _error_response(message: str, unavailable: bool = False) -> Any:
    code = getattr(pb_utils.TritonError, "UNAVAILABLE", None) if unavailable else None
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_output_tokens = int(params.get("max_output_tokens", "512"))
        self.max_batch_size = int(config.get("max_batch_size", 1)) or 1
        self.max_queue_size = int(params.get("max_queue_size", "0"))
        model_dir = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(model_dir, params.get("llm_args", "model.yaml"))) as file:
            self.llm_args: dict[str, Any] = yaml.safe_load(file)
        self.active = 0
        self.lock = threading.Lock()
        # Requests waiting beyond the batch, under the metric and labels TensorRT-LLM's C++
        # backend reports its engine queue with: the chart's autoscaling rule reads it as is.
        self.metric_family = pb_utils.MetricFamily(
            name="nv_trt_llm_request_metrics",
            description="TensorRT-LLM request metrics (kubechat's LLM API model: waiting requests)",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        labels = {
            "model": args["model_name"],
            "version": args.get("model_version", "1"),
            "request_type": "waiting",
        }
        self.waiting = self.metric_family.Metric(labels=labels)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llm-api", daemon=True)
        self.thread.start()
        # Deferred until here, as upstream does: importing tensorrt_llm initializes CUDA.
        from tensorrt_llm import LLM, SamplingParams
        from tensorrt_llm.llmapi import KvCacheConfig

        self.sampling_params = SamplingParams
        args_ = dict(self.llm_args)
        kv_cache = KvCacheConfig(**(args_.pop("kv_cache_config", None) or {}))

        async def start() -> Any:
            # As upstream does: the LLM is made while its event loop runs, in a worker thread of
            # that loop (construction blocks for minutes while the weights load).
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: LLM(kv_cache_config=kv_cache, **args_))

        self.llm = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        self.tokenizer = self.llm.tokenizer

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            with self.lock:
                full = self.active >= self.max_batch_size + self.max_queue_size
                if not full:
                    self.active += 1
                    self.waiting.set(max(0, self.active - self.max_batch_size))
            # Every send happens on the loop's thread: sends from several threads at once
            # crashed the python backend of Triton 2.51 (kubechat.engines.python_backend).
            work = self._refuse(sender) if full else self._generate(request, sender)
            asyncio.run_coroutine_threadsafe(work, self.loop)

    async def _refuse(self, sender: Any) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        sender.send(_error_response(QUEUE_FULL_MESSAGE, unavailable=True), flags=final)

    def _sampling(self, request: Any) -> tuple[Any, list[str]]:
        max_tokens = int(_scalar(request, "max_tokens", 0))
        if not 1 <= max_tokens <= self.max_output_tokens:
            raise ValueError(f"max_tokens must be within 1..{self.max_output_tokens}")
        stop = [s for s in _strings(request, "stop_words") if s]
        kwargs: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": float(_scalar(request, "temperature", 1.0)),
            "top_p": float(_scalar(request, "top_p", 1.0)),
            "repetition_penalty": float(_scalar(request, "repetition_penalty", 1.0)),
            # The engine stops on the stop strings' tokens; TextStream cuts the text exactly.
            "stop": stop or None,
            # Text comes from TextStream, from the token ids: the engine's own is not needed.
            "detokenize": False,
        }
        top_k = int(_scalar(request, "top_k", 0))
        if top_k > 0:
            kwargs["top_k"] = top_k
        seed = _scalar(request, "random_seed", None)
        if seed is not None:
            kwargs["seed"] = int(seed)
        end_id = _scalar(request, "end_id", None)
        if end_id is not None:
            kwargs["end_id"] = int(end_id)
        guide_type = _scalar(request, "guided_decoding_guide_type", "")
        if guide_type:
            from tensorrt_llm.llmapi import GuidedDecodingParams

            if guide_type not in GUIDE_TYPES:
                raise ValueError(f"unknown guided_decoding_guide_type {guide_type!r}")
            guide = _scalar(request, "guided_decoding_guide", "")
            value: Any = True if guide_type == "json" else guide
            kwargs["guided_decoding"] = GuidedDecodingParams(**{GUIDE_TYPES[guide_type]: value})
        return self.sampling_params(**kwargs), stop

    async def _generate(self, request: Any, sender: Any) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            prompt = _scalar(request, "text_input", None)
            if not isinstance(prompt, str):
                raise ValueError("text_input is required")
            streaming = bool(_scalar(request, "stream", False))
            sampling, stop = self._sampling(request)
            text = TextStream(_Decoder(self.tokenizer), stop)
            pieces: list[str] = []
            output = self.llm.generate_async(prompt, sampling, streaming=streaming)
            async for result in output:
                if sender.is_cancelled():
                    output.abort()
                    break
                delta = text.push(result.outputs[0].token_ids_diff)
                if delta and streaming:
                    sender.send(_text_response(delta))
                elif delta:
                    pieces.append(delta)
                if text.stopped:
                    output.abort()
                    break
            tail = text.finish()
            if streaming:
                if tail:
                    sender.send(_text_response(tail))
                sender.send(flags=final)  # the empty final response
            else:
                sender.send(_text_response("".join(pieces) + tail), flags=final)
        except Exception as exc:  # every failure ends the stream with an error, never a hang
            sender.send(_error_response(f"{type(exc).__name__}: {exc}"), flags=final)
        finally:
            with self.lock:
                self.active -= 1
                self.waiting.set(max(0, self.active - self.max_batch_size))

    def finalize(self) -> None:
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


class _Decoder:
    """The tokenizer of the LLM API (a Hugging Face tokenizer, or TensorRT-LLM's wrapper of one)
    as TextStream decodes with it."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens))
