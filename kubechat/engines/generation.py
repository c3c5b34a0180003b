"""Text generation engines for the streaming chat models: a real causal LM and a synthetic one."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubechat.engines.text_stream import IncrementalDetokenizer, StopSequenceFilter


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    end_id: int | None = None
    seed: int | None = None


class TextGenerator(Protocol):
    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool]) -> Iterator[str]:
        """Yield text deltas until done, a stop sequence, max_tokens, or `cancelled()`."""
        ...


# torch threads of the CPU chat engine. torch's default is one per core, and every operation is
# split over them with a barrier at its end: on a CPU shared with anything else (the other
# Triton models, ingestion, the API, other users) one descheduled thread stalls them all. On the
# 2-core development machine under load, a 576x1536 matrix-vector product took 0.38 ms on one
# thread and 13.8 ms on two; decoding ran 6-7 tokens/s on one thread against 1 on two, and a
# 600-token prefill took 1.6 s against 8 s (docs/design-decisions.md, benchmarks/decoding.py).
# KUBECHAT_ENGINE_THREADS overrides it for a machine the model has to itself.
ENGINE_THREADS = int(os.environ.get("KUBECHAT_ENGINE_THREADS", "1"))


class CausalLmGenerator:
    """A Hugging Face causal LM decoded token by token with a KV cache (CPU development model)."""

    def __init__(
        self,
        checkpoint_dir: str,
        checkpoint_file: str,
        tokenizer_dir: str,
        max_input_tokens: int,
        threads: int = ENGINE_THREADS,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.threads = threads
        # transformers' own annotations are too loose to check against; treat them as Any.
        self.tokenizer: Any = AutoTokenizer.from_pretrained(tokenizer_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(
            checkpoint_dir, gguf_file=checkpoint_file or None, dtype=torch.float32
        )
        self.model = model.eval()
        self.max_input_tokens = max_input_tokens
        eos = self.model.generation_config.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)

    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool]) -> Iterator[str]:
        torch = self._torch
        # The prompt already went through the chat template, special tokens included.
        ids = self.tokenizer(request.prompt, add_special_tokens=False).input_ids
        ids = ids[-self.max_input_tokens :]
        eos = self.eos_ids | ({request.end_id} if request.end_id is not None else set())
        generator = torch.Generator().manual_seed(request.seed) if request.seed is not None else None
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        stop = StopSequenceFilter(request.stop)
        inputs = torch.tensor([ids])
        seen = torch.tensor(ids, dtype=torch.long)  # prompt and answer, for the penalty
        cache = None
        with torch.inference_mode():
            torch.set_num_threads(self.threads)  # per generation: cheap, and nothing can change it under us
            for _ in range(request.max_tokens):
                if cancelled():
                    return
                out = self.model(input_ids=inputs, cache=cache, use_cache=True)
                cache = out.cache
                scores = apply_repetition_penalty(out.logits[0, -1].float(), seen, request.repetition_penalty)
                token = self._sample(scores, request, generator)
                if token in eos:
                    break
                delta = stop.push(detokenizer.push(token))
                if delta:
                    yield delta
                if stop.stopped:
                    return
                inputs = torch.tensor([[token]])
                seen = torch.cat((seen, inputs[0]))
        tail = stop.flush()
        if tail:
            yield tail

    def _sample(self, scores: Any, request: GenerationRequest, generator: object) -> int:
        torch = self._torch
        if request.temperature <= 0:
            return int(torch.argmax(scores))
        scores = scores / request.temperature
        if request.top_k > 0:
            kth = torch.topk(scores, min(request.top_k, scores.shape[-1])).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if request.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > request.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator))


def apply_repetition_penalty(scores: Any, seen: Any, penalty: float) -> Any:
    """CTRL's repetition penalty, as transformers and TensorRT-LLM apply it.

    Scores of tokens already in the prompt or answer are divided by `penalty` when positive
    and multiplied when negative: small models otherwise loop on a phrase.
    """
    if penalty == 1.0 or seen.numel() == 0:
        return scores
    previous = scores.gather(0, seen)
    penalized = (previous * penalty).where(previous < 0, previous / penalty)
    return scores.scatter(0, seen, penalized)


class SyntheticGenerator:
    """Emits `token{i} ` words as fast as asked: isolates gateway overhead in benchmarks.

    Pacing (a token every N ms) is the scheduler's step delay, as in a batched decoder.
    """

    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool]) -> Iterator[str]:
        return stop_filtered((f"token{i} " for i in itertools.count()), request, cancelled)


def stop_filtered(
    pieces: Iterable[str], request: GenerationRequest, cancelled: Callable[[], bool]
) -> Iterator[str]:
    """Generated pieces as a model streams them: at most `max_tokens` (one per piece), cut at
    the request's stop strings, ended at once when the client cancels."""
    stop = StopSequenceFilter(request.stop)
    for count, piece in enumerate(pieces):
        if count >= request.max_tokens:
            break
        if cancelled():
            return
        delta = stop.push(piece)
        if delta:
            yield delta
        if stop.stopped:
            return
    tail = stop.flush()
    if tail:
        yield tail
