"""Text generation engines for the streaming chat models: a real causal LM and a synthetic one."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class BatchingGenerator(Protocol):
    """A generator that decodes several requests in one forward per step (DecodingBatch)."""

    def open_batch(self) -> DecodingBatch: ...


# torch threads of the CPU chat engine. torch's default is one per core, and every operation is
# split over them with a barrier at its end: on a CPU shared with anything else (the other
# Triton models, ingestion, the API, other users) one descheduled thread stalls them all. On the
# 2-core development machine under load, a 576x1536 matrix-vector product took 0.38 ms on one
# thread and 13.8 ms on two; decoding ran 6-7 tokens/s on one thread against 1 on two, and a
# 600-token prefill took 1.6 s against 8 s (docs/design-decisions.md, benchmarks/decoding.py).
# KUBECHAT_ENGINE_THREADS overrides it for a machine the model has to itself.
ENGINE_THREADS = int(os.environ.get("KUBECHAT_ENGINE_THREADS", "1"))

# Prompt tokens a joining request prefills per step while other requests decode: a step with a
# chunk this long costs a few decode steps, so a long prompt delays the others' next token by
# that much rather than by its whole prefill (docs/design-decisions.md).
PREFILL_CHUNK_TOKENS = int(os.environ.get("KUBECHAT_PREFILL_CHUNK_TOKENS", "128"))


class CausalLmGenerator:
    """A Hugging Face causal LM decoded token by token with a KV cache (CPU development model)."""

    guided_decoding = True  # structured outputs: GrammarConstraints

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
        # Linear layers on oneDNN-packed weights: a batch of rows costs little more than one.
        from kubechat.engines.packed_linear import pack_linear_layers

        pack_linear_layers(self.model)
        self.max_input_tokens = max_input_tokens
        eos = self.model.generation_config.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.grammars = GrammarConstraints(self.tokenizer, self.model.config.vocab_size)

    def generate(
        self, request: GenerationRequest, cancelled: Callable[[], bool]
    ) -> Iterator[str | ScoredDelta]:
        """One request on its own: a batch of one, stepped until it finishes."""
        batch = self.open_batch()
        sequence = batch.add(request, cancelled)
        while not sequence.finished:
            batch.step()
            yield from sequence.take()
        yield from sequence.take()
        if sequence.error is not None:
            raise sequence.error

    def open_batch(self, prefill_chunk_tokens: int = PREFILL_CHUNK_TOKENS) -> DecodingBatch:
        """A batch that decodes every request added to it one token per step, in one forward."""
        return DecodingBatch(self, prefill_chunk_tokens)

    def prepare(self, request: GenerationRequest, cancelled: Callable[[], bool]) -> DecodingSequence:
        """A request's decoding state, before its prefill; a bad guide raises ValueError here."""
        torch = self._torch
        # The prompt already went through the chat template, special tokens included.
        ids = self.tokenizer(request.prompt, add_special_tokens=False).input_ids
        ids = ids[-self.max_input_tokens :]
        if not ids:
            raise ValueError("text_input has no tokens")
        eos = self.eos_ids | ({request.end_id} if request.end_id is not None else set())
        return DecodingSequence(
            request=request,
            cancelled=cancelled,
            prompt=list(ids),
            eos=eos,
            generator=torch.Generator().manual_seed(request.seed) if request.seed is not None else None,
            # Compiled once per request, before the first token; None without a guide.
            grammar=self.grammars.matcher(request, sorted(eos)),
            detokenizer=IncrementalDetokenizer(self.tokenizer),
            stop=StopSequenceFilter(request.stop),
            seen=torch.tensor(ids, dtype=torch.long),  # prompt and answer, for the penalty
            scored=[] if request.logprobs is not None else None,
        )

    def advance(self, sequence: DecodingSequence, logits: Any) -> None:
        """Take the next token of one sequence from its row of logits: penalty, grammar mask,
        sampling, then its text (held back at a possible stop string) onto `pending`."""
        torch = self._torch
        request = sequence.request
        scores = apply_repetition_penalty(logits.float(), sequence.seen, request.repetition_penalty)
        if sequence.grammar is not None:
            # Tokens the grammar cannot take next get -inf, end-of-sequence included until the
            # grammar accepts what was generated.
            scores = sequence.grammar.mask(scores)
        token = self._sample(scores, request, sequence.generator)
        if sequence.grammar is not None:
            sequence.grammar.accept(token)
        sequence.tokens.append(token)
        if token in sequence.eos:
            sequence.finish()
            return
        if sequence.scored is not None:
            sequence.scored.append(self._logprobs(scores, token, request.logprobs or 0))
        stop = sequence.stop
        delta = stop.push(sequence.detokenizer.push(token))
        if delta or (sequence.scored and stop.stopped):
            if sequence.scored is None:
                sequence.pending.append(delta)
            else:
                sequence.pending.append(ScoredDelta(delta, sequence.scored))
                sequence.scored = []
        if stop.stopped or len(sequence.tokens) >= request.max_tokens:
            sequence.finish()
            return
        sequence.next_token = token
        sequence.seen = torch.cat((sequence.seen, torch.tensor([token], dtype=torch.long)))

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


@dataclass(eq=False)
class DecodingSequence:
    """One request in a DecodingBatch: its prompt, sampling state and the text not yet taken."""

    request: GenerationRequest
    cancelled: Callable[[], bool]
    prompt: list[int]
    eos: set[int]
    generator: Any
    grammar: GrammarMatch | None
    detokenizer: IncrementalDetokenizer
    stop: StopSequenceFilter
    seen: Any  # prompt and answer token ids (a tensor), for the repetition penalty
    scored: list[dict[str, Any]] | None  # logprobs of tokens whose text is still held back
    tokens: list[int] = field(default_factory=list)  # generated so far, end-of-sequence included
    pending: list[str | ScoredDelta] = field(default_factory=list)
    finished: bool = False
    error: BaseException | None = None
    prefilled: int = 0  # prompt tokens in `cache` so far
    cache: Any = None  # its own KV cache while prefilling, before it joins the batch
    next_token: int | None = None  # sampled, not yet fed to the model

    def take(self) -> list[str | ScoredDelta]:
        """The deltas produced since the last call."""
        deltas, self.pending = self.pending, []
        return deltas

    def finish(self) -> None:
        """Done (end of sequence, stop string, max_tokens): release the held-back text."""
        tail = self.stop.flush()
        if self.scored:
            self.pending.append(ScoredDelta(tail, self.scored))
            self.scored = []
        elif tail:
            self.pending.append(tail)
        self.finished = True
        self.cache = None


class DecodingBatch:
    """The active requests of one CPU chat model, decoded together: one forward per step.

    Decoding one token is bound by reading the weights, not by arithmetic, so a step for four
    rows costs little more than a step for one. The decoding rows share one KV cache, left
    padded: each row's cache ends at the same index, an attention mask hides the padding, and
    position ids count each row's own tokens, so a row computes what it would alone. A new
    request is prefilled on its own cache, `prefill_chunk_tokens` prompt tokens per step while
    others decode (a long prompt does not stop them for its whole prefill), samples its first
    token from that prefill, and joins: its cache is padded to the batch's length and
    concatenated. A finished or cancelled row is dropped, with the padding no row needs any
    more. Per-request sampling, repetition penalty, stop strings, logprobs and grammar masks
    apply per row to that row's logits.
    """

    def __init__(self, engine: CausalLmGenerator, prefill_chunk_tokens: int = 0) -> None:
        self._engine = engine
        self._torch = engine._torch
        self.prefill_chunk_tokens = prefill_chunk_tokens or PREFILL_CHUNK_TOKENS
        self.joining: list[DecodingSequence] = []  # being prefilled, in arrival order
        self.rows: list[DecodingSequence] = []  # decoding, one row each of `_cache`
        self._cache: Any = None
        self._mask: Any = None  # [rows, cache length]: 1 for a token, 0 for padding

    def add(self, request: GenerationRequest, cancelled: Callable[[], bool]) -> DecodingSequence:
        sequence = self._engine.prepare(request, cancelled)
        self.joining.append(sequence)
        return sequence

    def __len__(self) -> int:
        return len(self.joining) + len(self.rows)

    def step(self) -> None:
        """Decode one token for every row, then prefill what the budget allows of the joining
        requests. A failure of the model fails every request it was computing."""
        torch = self._torch
        with torch.inference_mode():
            torch.set_num_threads(self._engine.threads)  # cheap; the benchmark changes it
            for sequence in self.joining + self.rows:
                if not sequence.finished and sequence.cancelled():
                    sequence.finished = True  # cancelled: nothing more is sent, not even held text
            self.joining = [s for s in self.joining if not s.finished]
            self._drop_finished()
            # Decoding first: a request that finishes its prefill below has its first token at
            # the end of this step, not after one more forward.
            if self.rows:
                try:
                    self._decode()
                except Exception as exc:
                    self._fail(self.rows, exc)
                    self.rows, self._cache, self._mask = [], None, None
            try:
                self._prefill()
            except Exception as exc:
                self._fail(self.joining, exc)
                self.joining = []
            self._drop_finished()  # their cache is not kept while the scheduler waits

    def _prefill(self) -> None:
        # The first prompt with no row decoding is prefilled at once (a request alone waits for
        # nothing else); otherwise prompts share a budget of prefill_chunk_tokens per step, so
        # the rows decoding meanwhile are delayed by a chunk, not by whole prompts.
        budget = self.prefill_chunk_tokens
        plan: list[tuple[DecodingSequence, int]] = []
        for sequence in self.joining:
            remaining = len(sequence.prompt) - sequence.prefilled
            if not plan and not self.rows:
                size = remaining
            elif budget <= 0:
                break
            else:
                size = min(remaining, budget)
                budget -= size
            plan.append((sequence, size))
        # Short prompts that start and finish their prefill in this step go in one forward. Not
        # long ones: packed, each token's attention spans the whole pack (masked), which costs
        # the square of the total length (4 prompts of 1,000 tokens: 3x slower than one by one).
        whole = [
            s
            for s, size in plan
            if s.prefilled == 0 and size == len(s.prompt) and size <= self.prefill_chunk_tokens
        ]
        if len(whole) < 2:
            whole = []
        else:
            self._prefill_together(whole)
        for sequence, size in plan:
            if sequence in whole:
                continue
            chunk = sequence.prompt[sequence.prefilled : sequence.prefilled + size]
            out = self._engine.model(
                input_ids=self._torch.tensor([chunk]), cache=sequence.cache, use_cache=True, logits_to_keep=1
            )
            sequence.cache = out.cache
            sequence.prefilled += size
            if sequence.prefilled == len(sequence.prompt):
                layers = [(layer.keys, layer.values) for layer in out.cache.layers]
                self._joined(sequence, out.logits[0, -1], out.cache, layers)

    def _prefill_together(self, sequences: list[DecodingSequence]) -> None:
        """Several whole prompts as one packed row: position ids restart at each prompt and a
        block-diagonal causal mask keeps each prompt to itself; each prompt's keys and values
        are then its own slice of the cache, and its logits those of its last token."""
        torch = self._torch
        ids = [token for s in sequences for token in s.prompt]
        positions = [p for s in sequences for p in range(len(s.prompt))]
        ends = list(itertools.accumulate(len(s.prompt) for s in sequences))
        # Each token sees the tokens of its own prompt up to itself (True: attend).
        owner = torch.tensor([i for i, s in enumerate(sequences) for _ in s.prompt])
        order = torch.arange(len(ids))
        mask = (owner[:, None] == owner[None, :]) & (order[:, None] >= order[None, :])
        out = self._engine.model(
            input_ids=torch.tensor([ids]),
            attention_mask=mask[None, None],
            position_ids=torch.tensor([positions]),
            use_cache=True,
            logits_to_keep=torch.tensor([end - 1 for end in ends]),
        )
        layers = [(layer.keys, layer.values) for layer in out.cache.layers]
        for i, (sequence, end) in enumerate(zip(sequences, ends, strict=True)):
            start = end - len(sequence.prompt)
            sequence.prefilled = len(sequence.prompt)
            own = [(k[:, :, start:end], v[:, :, start:end]) for k, v in layers]
            self._joined(sequence, out.logits[0, i], out.cache, own)

    def _joined(
        self, sequence: DecodingSequence, logits: Any, cache: Any, layers: list[tuple[Any, Any]]
    ) -> None:
        """Prefill done: the first token, then a row of the batch."""
        self.joining.remove(sequence)
        self._advance(sequence, logits)
        if not sequence.finished:
            self._join(sequence, cache, layers)
        sequence.cache = None

    def _decode(self) -> None:
        torch = self._torch
        positions = self._mask.sum(dim=1, keepdim=True)  # each row's own token count
        self._mask = torch.cat((self._mask, torch.ones((len(self.rows), 1), dtype=torch.long)), dim=1)
        inputs = torch.tensor([[s.next_token] for s in self.rows])
        out = self._engine.model(
            input_ids=inputs,
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        )
        self._cache = out.cache
        for row, sequence in enumerate(self.rows):
            self._advance(sequence, out.logits[row, -1])

    def _advance(self, sequence: DecodingSequence, logits: Any) -> None:
        try:
            self._engine.advance(sequence, logits)
        except Exception as exc:  # this request's own failure (its grammar): the others go on
            self._fail([sequence], exc)

    def _join(self, sequence: DecodingSequence, cache: Any, layers: list[tuple[Any, Any]]) -> None:
        """Add a prefilled sequence's keys and values (per layer) as a row; `cache` (the one its
        prefill returned) holds the batch's when the batch has none yet."""
        torch = self._torch
        length = layers[0][0].shape[-2]
        if self._cache is None:
            from kubechat.engines.kv_cache import GrowingLayer

            self._cache, self._mask = cache, torch.ones((1, length), dtype=torch.long)
            cache.layers[:] = [GrowingLayer(keys, values) for keys, values in layers]
        else:
            total = max(self._mask.shape[1], length)
            pad = torch.nn.functional.pad
            for mine, (keys, values) in zip(self._cache.layers, layers, strict=True):
                # Left padding to a common length: [rows, heads, tokens, head size].
                mine.assign(
                    torch.cat(
                        (
                            pad(mine.keys, (0, 0, total - mine.keys.shape[-2], 0)),
                            pad(keys, (0, 0, total - length, 0)),
                        )
                    ),
                    torch.cat(
                        (
                            pad(mine.values, (0, 0, total - mine.values.shape[-2], 0)),
                            pad(values, (0, 0, total - length, 0)),
                        )
                    ),
                )
            row = torch.ones((1, length), dtype=torch.long)
            self._mask = torch.cat(
                (pad(self._mask, (total - self._mask.shape[1], 0)), pad(row, (total - length, 0)))
            )
        self.rows.append(sequence)

    def _drop_finished(self) -> None:
        keep = [i for i, s in enumerate(self.rows) if not s.finished]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        torch = self._torch
        index = torch.tensor(keep)
        mask = self._mask[index]
        # Columns that are padding in every remaining row are dropped too.
        first = int(mask.any(dim=0).nonzero()[0])
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.assign(layer.keys[index, :, first:], layer.values[index, :, first:])

    @staticmethod
    def _fail(sequences: Iterable[DecodingSequence], exc: BaseException) -> None:
        for sequence in sequences:
            sequence.error, sequence.finished, sequence.cache = exc, True, None


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
