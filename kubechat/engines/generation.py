"""Text generation engines for the streaming chat models: a real causal LM and a synthetic one."""

from __future__ import annotations

import itertools
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
    # Structured output (TensorRT-LLM's guided decoding contract): "json" or "json_schema", and
    # the schema for the latter.
    guide_type: str | None = None
    guide: str = ""
    # Log probabilities: None for none, else the number of alternatives per token (0 to 20).
    logprobs: int | None = None


@dataclass(frozen=True)
class ScoredDelta:
    """A text delta with the log probabilities of the tokens generated since the previous one
    (OpenAI's entries: token, bytes, logprob, top_logprobs); a token whose text is held back (an
    incomplete character, a possible stop string) is reported with the next delta."""

    text: str
    logprobs: list[dict[str, Any]]


class TextGenerator(Protocol):
    def generate(
        self, request: GenerationRequest, cancelled: Callable[[], bool]
    ) -> Iterator[str] | Iterator[str | ScoredDelta]:
        """Yield text deltas until done, a stop sequence, max_tokens, or `cancelled()`."""
        ...


class CausalLmGenerator:
    """A Hugging Face causal LM decoded token by token with a KV cache (CPU development model)."""

    guided_decoding = True  # structured outputs: GrammarConstraints

    def __init__(
        self, checkpoint_dir: str, checkpoint_file: str, tokenizer_dir: str, max_input_tokens: int
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
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
        self.grammars = GrammarConstraints(self.tokenizer, self.model.config.vocab_size)

    def generate(
        self, request: GenerationRequest, cancelled: Callable[[], bool]
    ) -> Iterator[str | ScoredDelta]:
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
        # Compiled once per request, before the first token; None without a guide.
        grammar = self.grammars.matcher(request, sorted(eos))
        scored: list[dict[str, Any]] | None = [] if request.logprobs is not None else None
        cache = None
        with torch.inference_mode():
            for _ in range(request.max_tokens):
                if cancelled():
                    return
                out = self.model(input_ids=inputs, cache=cache, use_cache=True)
                cache = out.cache
                scores = apply_repetition_penalty(out.logits[0, -1].float(), seen, request.repetition_penalty)
                if grammar is not None:
                    # Tokens the grammar cannot take next get -inf, end-of-sequence included
                    # until the grammar accepts what was generated.
                    scores = grammar.mask(scores)
                token = self._sample(scores, request, generator)
                if grammar is not None:
                    grammar.accept(token)
                if token in eos:
                    break
                if scored is not None:
                    scored.append(self._logprobs(scores, token, request.logprobs or 0))
                delta = stop.push(detokenizer.push(token))
                if delta or (scored and stop.stopped):
                    if scored is None:
                        yield delta
                    else:
                        yield ScoredDelta(delta, scored)
                        scored = []
                if stop.stopped:
                    return
                inputs = torch.tensor([[token]])
                seen = torch.cat((seen, inputs[0]))
        tail = stop.flush()
        if scored:
            yield ScoredDelta(tail, scored)
        elif tail:
            yield tail

    def _logprobs(self, scores: Any, token: int, top: int) -> dict[str, Any]:
        """OpenAI's entry for the chosen token: its log probability under the distribution it was
        drawn from (after the repetition penalty and the grammar's mask, before temperature), and
        the `top` likeliest tokens'."""
        torch = self._torch
        logprobs = torch.log_softmax(scores, dim=-1)
        entry = self._token_entry(token, float(logprobs[token]))
        alternatives = torch.topk(logprobs, top) if top else None
        entry["top_logprobs"] = (
            [self._token_entry(int(i), float(v)) for v, i in zip(*alternatives, strict=True)]
            if alternatives is not None
            else []
        )
        return entry

    def _token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token])
        # -inf (a token the grammar forbids) is not JSON: the most negative float stands for it.
        return {"token": text, "bytes": list(text.encode("utf-8")), "logprob": max(logprob, -9999.0)}

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


class GrammarConstraints:
    """Constrained decoding with xgrammar (the engine TensorRT-LLM's guided decoding uses): the
    tokenizer's vocabulary is read once; each request's grammar is compiled against it, and a
    matcher masks the logits of every step to the tokens the grammar allows."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._compiler: Any = None  # built on the first guided request: most requests have none

    def matcher(self, request: GenerationRequest, stop_ids: list[int]) -> GrammarMatch | None:
        if request.guide_type is None:
            return None
        import xgrammar

        if self._compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=stop_ids
            )
            self._compiler = xgrammar.GrammarCompiler(info)
        try:
            if request.guide_type == "json":
                compiled = self._compiler.compile_builtin_json_grammar()
            elif request.guide_type == "json_schema":
                # Compact JSON (no free whitespace): a small model left free to add newlines
                # may add them until max_tokens.
                compiled = self._compiler.compile_json_schema(request.guide, any_whitespace=False)
            else:
                raise ValueError(f"guided_decoding_guide_type {request.guide_type!r} is not supported")
        except RuntimeError as exc:  # xgrammar's error for a schema it cannot compile
            raise ValueError(f"the guide cannot be compiled: {exc}") from None
        return GrammarMatch(
            xgrammar.GrammarMatcher(compiled, override_stop_tokens=stop_ids), self._vocab_size
        )


class GrammarMatch:
    """One request's grammar state: the mask of the next token, then the token taken."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        import xgrammar

        self._xgrammar = xgrammar
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)

    def mask(self, scores: Any) -> Any:
        self._matcher.fill_next_token_bitmask(self._bitmask)
        logits = scores.unsqueeze(0)
        self._xgrammar.apply_token_bitmask_inplace(logits, self._bitmask, vocab_size=self._vocab_size)
        return logits[0]

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(token):  # the mask allowed it: never expected
            raise RuntimeError(f"the grammar refused token {token} it allowed")


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
