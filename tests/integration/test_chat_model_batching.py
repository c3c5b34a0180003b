"""The embedded SmolLM2 through the session's real tritonserver with several streams at once:
the Triton model's scheduler decodes them as one batch, and each stream gets what it gets alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kubechat.embedded.tritonserver import TritonServer
from kubechat.triton.client import SamplingParams, TritonGateway

pytestmark = pytest.mark.triton

MODEL = "smollm2"
QUESTIONS = [
    "What is the capital of France? Answer in one long paragraph.",
    "Write a haiku about Kubernetes clusters and pods.",
    "List three colours, one per line.",
    "Explain what a Kubernetes operator does.",
]


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
async def gateway(triton: TritonServer) -> AsyncIterator[TritonGateway]:
    client = TritonGateway(triton.grpc_url, timeout_s=300)
    yield client
    await client.close()


async def answer(gateway: TritonGateway, question: str, params: SamplingParams, stop_after: int = 0) -> str:
    """The streamed text; with `stop_after`, the client leaves after that many deltas."""
    deltas: list[str] = []
    async for delta in gateway.stream_text(MODEL, chat(question), params):
        deltas.append(delta)
        if stop_after and len(deltas) >= stop_after:
            break  # leaving the iteration cancels the gRPC call
    return "".join(deltas)


async def test_concurrent_streams_get_what_they_get_alone(gateway: TritonGateway) -> None:
    params = [SamplingParams(max_tokens=n, repetition_penalty=1.1) for n in (24, 12, 20, 16)]
    alone = [await answer(gateway, q, p) for q, p in zip(QUESTIONS, params, strict=True)]
    together = await asyncio.gather(*(answer(gateway, q, p) for q, p in zip(QUESTIONS, params, strict=True)))
    assert list(together) == alone
    assert all(alone)


async def test_a_stream_cancelled_mid_batch_leaves_the_others_as_they_were(gateway: TritonGateway) -> None:
    params = SamplingParams(max_tokens=24, repetition_penalty=1.1)
    alone = [await answer(gateway, q, params) for q in QUESTIONS[:3]]
    together = await asyncio.gather(
        answer(gateway, QUESTIONS[0], params),
        answer(gateway, QUESTIONS[1], params, stop_after=3),
        answer(gateway, QUESTIONS[2], params),
    )
    assert [together[0], together[2]] == [alone[0], alone[2]]
    assert alone[1].startswith(together[1]) and len(together[1]) < len(alone[1])
    # The model still answers afterwards: the cancelled row left the batch cleanly.
    assert await answer(gateway, QUESTIONS[1], params) == alone[1]
