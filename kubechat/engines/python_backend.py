"""Adapters between Triton's python backend and kubechat's engines (chat, embedder, vision).

Imported only inside the tritonserver python-backend stub, where `triton_python_backend_utils`
exists. Each model.py in model-repo/ subclasses one of these and names its engine.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

from kubechat.engines.generation import (
    BatchingGenerator,
    DecodingSequence,
    GenerationRequest,
    ScoredDelta,
    TextGenerator,
)
from kubechat.engines.reranking import PassageScorer
from kubechat.triton import contract

logger = logging.getLogger(__name__)


def model_parameters(args: dict[str, str]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def _input(request: Any, name: str) -> npt.NDArray[Any] | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _scalar(request: Any, name: str, default: Any) -> Any:
    value = _input(request, name)
    if value is None or value.size == 0:
        return default
    item = value.reshape(-1)[0]
    return item.decode("utf-8") if isinstance(item, bytes) else item.item()


def _text_response(text: str, logprobs: list[dict[str, Any]] | None = None) -> Any:
    data = np.array([[text.encode("utf-8")]], dtype=np.object_)
    tensors = [pb_utils.Tensor(contract.TEXT_OUTPUT, data)]
    if logprobs is not None:
        entries = np.array([[json.dumps(logprobs).encode("utf-8")]], dtype=np.object_)
        tensors.append(pb_utils.Tensor(contract.LOGPROBS_OUTPUT, entries))
    return pb_utils.InferenceResponse(output_tensors=tensors)


def _send_error(sender: Any, exc: BaseException) -> None:
    """Answer a request with an error response that also ends its stream."""
    if isinstance(exc, ValueError):  # the request's fault: no traceback in the server's log
        logger.warning("request refused: %s", exc)
    else:
        logger.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    error = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))
    sender.send(error, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def _send_final(sender: Any, text: str = "", logprobs: list[dict[str, Any]] | None = None) -> None:
    """End a stream: the final flag rides on a last response (empty when streaming), so clients
    see `triton_final_response` without opting into empty final responses."""
    sender.send(_text_response(text, logprobs), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def _counter(name: str, description: str) -> Any:
    return pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)


@dataclass
class _Stream:
    """One request being generated: its sender, where its text comes from, what it has produced.

    The text comes from `deltas` (a generator's iterator, advanced one delta per step) or from
    `sequence` (a row of the model's DecodingBatch, which the scheduler steps for all rows)."""

    sender: Any
    stream: bool
    deltas: Iterator[str | ScoredDelta] | None = None
    sequence: DecodingSequence | None = None
    pieces: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None  # not streaming: all of them, sent at the end


class StreamingChatModel:
    """Decoupled model with the TensorRT-LLM ensemble contract, scheduled like in-flight batching.

    execute() only enqueues. One scheduler thread admits up to `max_active` requests and
    advances every active one by one token per step, so streams interleave fairly; all sends
    come from that one thread (sends from many threads at once crashed Triton 2.51's python
    backend). A generator that batches (`open_batch`, the CPU causal LM) computes the token of
    every active stream in one forward per step; others are advanced stream by stream.
    `step_delay_s` paces steps, for the synthetic model. Cancellation from the client is checked
    between tokens.
    """

    max_active = 1
    step_delay_s = 0.0

    def create_generator(self, params: dict[str, str]) -> TextGenerator:
        raise NotImplementedError

    def initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(args)
        self.max_output_tokens = int(params.get("max_output_tokens", "512"))
        self.generator = self.create_generator(params)
        self.batch = self.generator.open_batch() if isinstance(self.generator, BatchingGenerator) else None
        labels = {"model": args["model_name"]}
        # Custom metrics on Triton's /metrics: operators see cancellations reach the model.
        # The families must outlive their metrics, so both are kept.
        self.metric_families = (
            _counter(
                "kubechat_generations_cancelled_total",
                "Generations stopped because the client cancelled the request",
            ),
            _counter("kubechat_generations_completed_total", "Generations that ran to their end"),
        )
        self.cancelled, self.completed = (f.Metric(labels=labels) for f in self.metric_families)
        self.incoming: queue.Queue[Any] = queue.Queue()
        self.scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        self.scheduler.start()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            self.incoming.put(request)

    def finalize(self) -> None:
        self.incoming.put(None)
        self.scheduler.join(timeout=30)

    def _schedule(self) -> None:
        waiting: deque[Any] = deque()
        active: list[_Stream] = []
        while True:
            try:
                # Block only when there is nothing to generate.
                item = self.incoming.get(block=not active and not waiting)
                while True:
                    if item is None:
                        return
                    waiting.append(item)
                    item = self.incoming.get_nowait()
            except queue.Empty:
                pass
            while waiting and len(active) < self.max_active:
                started = self._start(waiting.popleft())
                if started is not None:
                    active.append(started)
            if self.batch is not None and active:
                self.batch.step()  # never raises: a failure ends up in the failed rows
            active = [s for s in active if self._step(s)]
            if self.step_delay_s and active:
                time.sleep(self.step_delay_s)

    def _start(self, request: Any) -> _Stream | None:
        sender = request.get_response_sender()
        try:
            generation = self._parse(request)
            stream = bool(_scalar(request, contract.STREAM, False))
            logprobs: list[dict[str, Any]] | None = [] if generation.logprobs is not None else None
            if self.batch is not None:
                sequence = self.batch.add(generation, sender.is_cancelled)
                return _Stream(sender, stream, sequence=sequence, logprobs=logprobs)
            deltas = self.generator.generate(generation, sender.is_cancelled)
            return _Stream(sender, stream, deltas=iter(deltas), logprobs=logprobs)
        except Exception as exc:
            _send_error(sender, exc)
            return None

    def _step(self, s: _Stream) -> bool:
        """Send what one stream produced in this step; False once it is finished."""
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            if s.sequence is not None:
                for delta in s.sequence.take():
                    self._emit(s, delta)
                if not s.sequence.finished:
                    return True
                if s.sequence.error is not None:
                    raise s.sequence.error
            else:
                assert s.deltas is not None
                produced = next(s.deltas, None)
                if produced is not None:
                    self._emit(s, produced)
                    return True
            if s.sender.is_cancelled():
                self.cancelled.increment(1)
                s.sender.send(flags=final)
                return False
            self.completed.increment(1)
            _send_final(s.sender, "" if s.stream else "".join(s.pieces), None if s.stream else s.logprobs)
        except Exception as exc:  # report every failure to the client, never hang the stream
            _send_error(s.sender, exc)
        return False

    @staticmethod
    def _emit(s: _Stream, delta: str | ScoredDelta) -> None:
        text, logprobs = (delta.text, delta.logprobs) if isinstance(delta, ScoredDelta) else (delta, None)
        if s.stream:
            s.sender.send(_text_response(text, logprobs))
            return
        s.pieces.append(text)
        if s.logprobs is not None and logprobs is not None:
            s.logprobs.extend(logprobs)

    def _parse(self, request: Any) -> GenerationRequest:
        prompt = _scalar(request, contract.TEXT_INPUT, None)
        if not isinstance(prompt, str):
            raise ValueError("text_input is required")
        max_tokens = int(_scalar(request, contract.MAX_TOKENS, 0))
        if not 0 < max_tokens <= self.max_output_tokens:
            raise ValueError(f"max_tokens must be in 1..{self.max_output_tokens}, got {max_tokens}")
        stop_words = _input(request, contract.STOP_WORDS)
        stop = [] if stop_words is None else [s.decode("utf-8") for s in stop_words.reshape(-1) if s]
        end_id = _scalar(request, contract.END_ID, None)
        seed = _scalar(request, contract.RANDOM_SEED, None)
        top_logprobs = int(_scalar(request, contract.TOP_LOGPROBS, 0))
        logprobs = top_logprobs if _scalar(request, contract.RETURN_LOG_PROBS, False) else None
        if not 0 <= top_logprobs <= contract.MAX_TOP_LOGPROBS:
            raise ValueError(f"{contract.TOP_LOGPROBS} must be in 0..{contract.MAX_TOP_LOGPROBS}")
        guide_type = _scalar(request, contract.GUIDED_DECODING_GUIDE_TYPE, None) or None
        if guide_type is not None and not getattr(self.generator, "guided_decoding", False):
            raise ValueError(f"{contract.GUIDED_DECODING_GUIDE_TYPE}: this model has no constrained decoding")
        return GenerationRequest(
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=float(_scalar(request, contract.TEMPERATURE, 0.0)),
            top_p=float(_scalar(request, contract.TOP_P, 1.0)),
            top_k=int(_scalar(request, contract.TOP_K, 0)),
            repetition_penalty=float(_scalar(request, contract.REPETITION_PENALTY, 1.0)),
            stop=stop,
            end_id=None if end_id is None else int(end_id),
            seed=None if seed is None else int(seed),
            guide_type=guide_type,
            guide=_scalar(request, contract.GUIDED_DECODING_GUIDE, "") or "",
            logprobs=logprobs,
        )


class SentenceEmbeddingModel:
    """Batched embedder: Triton's dynamic batcher merges requests, we encode them in one call.

    A question (a few texts) is encoded on one torch thread, a batch of chunks on all of them.
    A small forward pass split across threads spends its time at OpenMP barriers waiting for the
    slowest thread: on a machine whose cores the API and other models also use, one query took
    30-300 ms on two threads (mostly libgomp spinning, measured with py-spy) against 10-16 ms
    on one. Large batches have enough work per thread for the split to pay.
    """

    small_batch = 8  # texts per execute() at most to be encoded on one thread

    def initialize(self, args: dict[str, str]) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        params = model_parameters(args)
        self.torch = torch
        self.threads = torch.get_num_threads()
        self.model = SentenceTransformer(params["checkpoint_dir"], device="cpu")

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [_input(r, contract.EMBED_TEXT) for r in requests]
        texts = [t.decode("utf-8") for batch in batches if batch is not None for t in batch.reshape(-1)]
        self.torch.set_num_threads(1 if len(texts) <= self.small_batch else self.threads)
        vectors = self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        responses, start = [], 0
        for batch in batches:
            count = 0 if batch is None else batch.shape[0]
            chunk = np.asarray(vectors[start : start + count], dtype=np.float32)
            start += count
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(contract.EMBED_OUTPUT, chunk)])
            )
        return responses


class SentenceRerankModel:
    """Batched reranker: each request is (query, passage) pairs; one relevance per pair."""

    def initialize(self, args: dict[str, str]) -> None:
        self.scorer = PassageScorer(model_parameters(args)["checkpoint_dir"])

    def execute(self, requests: list[Any]) -> list[Any]:
        pairs = [(_input(r, contract.RERANK_QUERY), _input(r, contract.RERANK_TEXT)) for r in requests]
        queries = [q.decode("utf-8") for query, _ in pairs if query is not None for q in query.reshape(-1)]
        texts = [t.decode("utf-8") for _, text in pairs if text is not None for t in text.reshape(-1)]
        scores = self.scorer.scores(queries, texts)
        responses, start = [], 0
        for query, _ in pairs:
            count = 0 if query is None else query.shape[0]
            chunk = np.asarray(scores[start : start + count], dtype=np.float32).reshape(count, 1)
            start += count
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(contract.RERANK_OUTPUT, chunk)])
            )
        return responses


@dataclass(frozen=True)
class _ImageRequest:
    """What a worker needs to describe one image; read from the request in execute()."""

    sender: Any
    stream: bool
    prompt: str
    image: bytes


@dataclass(frozen=True)
class _Answer:
    """A finished description, or why there is none, for the sender thread to send."""

    sender: Any
    stream: bool
    text: str = ""
    error: Exception | None = None


class ImageDescriptionModel:
    """Decoupled vision model: an image and a prompt in, a plain-text description streamed out.

    The vision contract is the chat contract plus `image_bytes_input` (see model-repo/README.md).
    execute() only reads the requests and hands them to a small thread pool that decodes and
    describes (OCR runs the tesseract binary, 0.2-1 s an image, so a pool keeps Triton's thread
    free and two images are read at once); one sender thread sends every response, as in
    StreamingChatModel (sends from many threads at once crashed Triton 2.51's python backend).
    The description streams line by line and ends like a chat stream. `max_tokens` is required
    (at least 1) but does not cut the description: OCR text cut mid-way would mislead the chat
    model reading it, and a description is rarely longer than a page. Cancellation is checked
    between lines (an OCR run already started finishes).
    """

    workers = 2

    def initialize(self, args: dict[str, str]) -> None:
        from kubechat.engines.vision import check_tesseract

        # One core per tesseract run: the pool runs several at once, and OpenMP threads fighting
        # over the same cores made each run slower (0.80 s against 0.68 s here).
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        params = model_parameters(args)
        self.languages = params.get("languages", "eng")
        self.max_pixels = int(params.get("max_image_pixels", "25000000"))
        # Fails the model's load, with the Debian package to install, if tesseract is missing.
        version = check_tesseract(self.languages)
        logger.info("tesseract %s, languages %s", version, self.languages)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="describe")
        self.answers: queue.Queue[_Answer | None] = queue.Queue()
        self.sender = threading.Thread(target=self._send_answers, name="sender", daemon=True)
        self.sender.start()

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                parsed = self._parse(request, sender)
            except Exception as exc:  # the error response ends the stream, whatever `stream` asked
                self.answers.put(_Answer(sender, False, error=exc))
                continue
            self.pool.submit(self._describe, parsed)

    def finalize(self) -> None:
        self.pool.shutdown(wait=True)
        self.answers.put(None)
        self.sender.join(timeout=30)

    def _parse(self, request: Any, sender: Any) -> _ImageRequest:
        stream = bool(_scalar(request, contract.STREAM, False))
        prompt = _scalar(request, contract.TEXT_INPUT, None)
        if not isinstance(prompt, str):
            raise ValueError("text_input is required")
        max_tokens = int(_scalar(request, contract.MAX_TOKENS, 0))
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        image = _input(request, contract.IMAGE_BYTES_INPUT)
        if image is None:
            raise ValueError(f"{contract.IMAGE_BYTES_INPUT} is required")
        return _ImageRequest(sender, stream, prompt, np.ascontiguousarray(image, dtype=np.uint8).tobytes())

    def _describe(self, request: _ImageRequest) -> None:
        from kubechat.engines.vision import decode_image, describe_image

        try:
            image = decode_image(request.image, self.max_pixels)
            text = describe_image(image, request.prompt, self.languages)
            self.answers.put(_Answer(request.sender, request.stream, text))
        except Exception as exc:  # every failure becomes the request's error response
            self.answers.put(_Answer(request.sender, request.stream, error=exc))

    def _send_answers(self) -> None:
        while (answer := self.answers.get()) is not None:
            try:
                self._send(answer)
            except Exception:  # a client gone mid-send; the next answer must still go out
                logger.exception("sending a description failed")

    def _send(self, answer: _Answer) -> None:
        if answer.error is not None:
            _send_error(answer.sender, answer.error)
            return
        if not answer.stream:
            _send_final(answer.sender, answer.text)
            return
        for line in answer.text.splitlines(keepends=True):
            if answer.sender.is_cancelled():
                answer.sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            answer.sender.send(_text_response(line))
        _send_final(answer.sender)
