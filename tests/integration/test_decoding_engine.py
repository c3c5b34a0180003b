"""The CPU chat engine (what the smollm2 Triton model runs), in process with the real SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kubechat.catalog import load_catalog
from kubechat.core.resources import Capability
from kubechat.engines import kv_cache
from kubechat.engines.generation import (
    ENGINE_THREADS,
    CausalLmGenerator,
    DecodingBatch,
    DecodingSequence,
    GenerationRequest,
    ScoredDelta,
)
from kubechat.triton.artifacts import prepare_artifacts
from tests.conftest import EXAMPLE_MODELS


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CausalLmGenerator]:
    state = tmp_path_factory.mktemp("state")
    entry = load_catalog(EXAMPLE_MODELS, state).get("smollm2", Capability.CHAT)
    artifacts = prepare_artifacts(entry.model, Path(state))
    threads = torch.get_num_threads()
    yield CausalLmGenerator(
        artifacts.checkpoint_dir, artifacts.checkpoint_file, artifacts.tokenizer_dir,
        entry.model.spec.engine.max_input_tokens,
    )  # fmt: skip
    torch.set_num_threads(threads)


def test_the_engine_decodes_on_its_own_thread_count(generator: CausalLmGenerator) -> None:
    assert generator.threads == ENGINE_THREADS == 1  # KUBECHAT_ENGINE_THREADS is unset in tests
    torch.set_num_threads(2)  # as torch starts: one per core
    during: list[int] = []

    def cancelled() -> bool:  # asked before every step
        during.append(torch.get_num_threads())
        return False

    request = GenerationRequest(
        prompt="<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", max_tokens=6
    )
    text = "".join(d if isinstance(d, str) else d.text for d in generator.generate(request, cancelled))
    assert text.strip() and len(during) >= 2
    assert set(during) == {1}  # every step ran single-threaded


# Batched decoding (DecodingBatch): several requests in one forward per step must each produce
# what they produce alone. Greedy token ids are compared: wrong padding masks or positions
# change them within a few tokens.

QUESTIONS = [
    "Say hi.",
    "What is the capital of France? Answer in one long paragraph.",
    "Write a haiku about Kubernetes clusters and pods.",
    "List three colours, one per line.",
]


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def alone(generator: CausalLmGenerator, request: GenerationRequest) -> DecodingSequence:
    batch = generator.open_batch()
    sequence = batch.add(request, lambda: False)
    while not sequence.finished:
        batch.step()
    return sequence


def text_of(deltas: list[str | ScoredDelta]) -> str:
    return "".join(d if isinstance(d, str) else d.text for d in deltas)


def run(batch: DecodingBatch) -> None:
    while len(batch):
        batch.step()


def test_greedy_output_alone_is_what_transformers_generates(generator: CausalLmGenerator) -> None:
    prompt = chat(QUESTIONS[1])
    ids = generator.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    reference = generator.model.generate(ids, do_sample=False, max_new_tokens=24)[0, ids.shape[1] :]
    assert alone(generator, GenerationRequest(prompt=prompt, max_tokens=24)).tokens == reference.tolist()


def test_greedy_output_batched_is_the_same_as_alone(
    generator: CausalLmGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_cache, "SPARE_TOKENS", 3)  # the batch's cache grows into new buffers
    requests = [GenerationRequest(prompt=chat(q), max_tokens=32, repetition_penalty=1.1) for q in QUESTIONS]
    expected = [alone(generator, r).tokens for r in requests]
    # A small prefill chunk: the later requests prefill over several steps while the first ones
    # decode, and join a batch whose cache is longer or shorter than their prompt.
    batch = generator.open_batch(prefill_chunk_tokens=5)
    sequences = [batch.add(requests[0], lambda: False)]
    batch.step()
    batch.step()
    for request in requests[1:]:
        sequences.append(batch.add(request, lambda: False))
        batch.step()
    run(batch)
    assert [s.tokens for s in sequences] == expected
    assert len({len(t) for t in expected}) > 1  # rows of different lengths left the batch one by one


def test_a_joining_request_prefills_while_the_batch_decodes(generator: CausalLmGenerator) -> None:
    batch = generator.open_batch(prefill_chunk_tokens=4)
    first = batch.add(GenerationRequest(prompt=chat(QUESTIONS[1]), max_tokens=40), lambda: False)
    batch.step()
    assert len(first.tokens) == 1 and batch.rows == [first]
    second = batch.add(GenerationRequest(prompt=chat(QUESTIONS[2]), max_tokens=8), lambda: False)
    steps = 0
    while not second.tokens:
        batch.step()
        steps += 1
    # The first request got a token every step of the second's chunked prefill.
    assert steps == -(-len(second.prompt) // 4)
    assert len(first.tokens) == 1 + steps
    run(batch)
    assert second.tokens == alone(generator, second.request).tokens


def test_cancelling_one_request_leaves_the_others_as_they_were(generator: CausalLmGenerator) -> None:
    requests = [GenerationRequest(prompt=chat(q), max_tokens=24) for q in QUESTIONS[1:4]]
    expected = [alone(generator, r).tokens for r in requests]
    cancel = False
    batch = generator.open_batch()
    sequences = [
        batch.add(requests[0], lambda: False),
        batch.add(requests[1], lambda: cancel),
        batch.add(requests[2], lambda: False),
    ]
    for _ in range(5):
        batch.step()
    cancel = True
    run(batch)
    assert sequences[1].finished and sequences[1].error is None
    assert len(sequences[1].tokens) == 5  # nothing generated after the cancellation
    assert [sequences[0].tokens, sequences[2].tokens] == [expected[0], expected[2]]
    assert batch.rows == [] and batch.joining == []


def test_each_request_keeps_its_own_stop_and_max_tokens(generator: CausalLmGenerator) -> None:
    requests = [
        GenerationRequest(prompt=chat(QUESTIONS[1]), max_tokens=3),
        GenerationRequest(prompt=chat(QUESTIONS[1]), max_tokens=40, stop=["France"]),
        GenerationRequest(prompt=chat(QUESTIONS[1]), max_tokens=40),
    ]
    batch = generator.open_batch()
    sequences = [batch.add(r, lambda: False) for r in requests]
    texts = [""] * len(sequences)
    while len(batch):
        batch.step()
        for i, sequence in enumerate(sequences):
            texts[i] += text_of(sequence.take())
    full = texts[2]
    assert "France" in full
    assert len(sequences[0].tokens) == 3 and full.startswith(texts[0])
    assert texts[1] == full[: full.index("France")]


def test_sampling_logprobs_and_grammar_batched_are_the_same_as_alone(generator: CausalLmGenerator) -> None:
    requests = [
        GenerationRequest(
            prompt=chat(QUESTIONS[2]), max_tokens=20, temperature=0.8, top_p=0.9, top_k=40, seed=7
        ),
        GenerationRequest(
            prompt=chat("Describe a cat as JSON."), max_tokens=30, guide_type="json", logprobs=2
        ),
        GenerationRequest(prompt=chat(QUESTIONS[0]), max_tokens=12, logprobs=1),
    ]
    expected = [text_of(list(generator.generate(r, lambda: False))) for r in requests]
    batch = generator.open_batch()
    sequences = [batch.add(r, lambda: False) for r in requests]
    deltas: list[list[str | ScoredDelta]] = [[] for _ in sequences]
    while len(batch):
        batch.step()
        for produced, sequence in zip(deltas, sequences, strict=True):
            produced += sequence.take()
    assert [text_of(d) for d in deltas] == expected
    assert expected[1].startswith("{")  # the grammar held in its row
    scored = [entry for d in deltas[2] if isinstance(d, ScoredDelta) for entry in d.logprobs]
    assert len(scored) == len(sequences[2].tokens) - (sequences[2].tokens[-1] in generator.eos_ids)
    assert all(len(entry["top_logprobs"]) == 1 for entry in scored)
