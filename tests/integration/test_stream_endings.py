"""The API's Triton client against the real tritonserver, on the two stream endings of the GPU
path: a decoupled stream that ends with an empty final response (TensorRT-LLM's models end so),
and a request refused because the model's queue is full (`busy`).

The model (tests/data/triton_models/stream_end) ends its streams with a flags-only final response
and holds its single instance on the prompt `hold`; its queue takes one waiting request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kubechat.core.errors import ModelBusyError, ModelUnavailableError
from kubechat.embedded.tritonserver import TritonServer
from kubechat.triton import contract
from kubechat.triton.client import SamplingParams, TritonGateway
from kubechat.triton.repository import _parameters, _tensor_block, parse_model_config
from tests.conftest import free_ports

MODEL = "stream-end"
MODEL_CODE = Path(__file__).resolve().parents[1] / "data" / "triton_models" / "stream_end" / "model.py"
HOLD_MS = 4000
# A stream that does not end within this fails the test (without empty final responses it would
# wait for the client's stream timeout, minutes).
GUARD_S = 30.0


def _config() -> str:
    text = (
        f'name: "{MODEL}"\nbackend: "python"\nmax_batch_size: 1\n'
        "model_transaction_policy {\n  decoupled: true\n}\n"
        # One request may wait while the instance is busy; the next is refused at once.
        "dynamic_batching {\n  default_queue_policy {\n    max_queue_size: 1\n  }\n}\n"
        + _tensor_block("input", contract.CHAT_INPUTS)
        + _tensor_block("output", contract.CHAT_OUTPUTS)
        + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
        + _parameters({"hold_ms": str(HOLD_MS)})
    )
    parse_model_config(text)
    return text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("stream-end")
    repository = root / "repository"
    (repository / MODEL / "1").mkdir(parents=True)
    (repository / MODEL / "config.pbtxt").write_text(_config())
    (repository / MODEL / "1" / "model.py").write_bytes(MODEL_CODE.read_bytes())
    ports = free_ports()
    triton = TritonServer(
        repository, root, http_port=ports.http, grpc_port=ports.grpc, metrics_port=ports.metrics
    )
    triton.start()
    try:
        triton.wait_ready(180)
        yield triton
    finally:
        triton.stop()


@pytest.fixture
async def gateway(server: TritonServer) -> AsyncIterator[TritonGateway]:
    client = TritonGateway(server.grpc_url)
    yield client
    await client.close()


PARAMS = SamplingParams(max_tokens=16, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0)


async def _answer(gateway: TritonGateway, prompt: str) -> str:
    return "".join([delta async for delta in gateway.stream_text(MODEL, prompt, PARAMS)])


async def test_a_stream_ending_with_an_empty_final_response_terminates(gateway: TritonGateway) -> None:
    """The text arrives and the stream ends; without enable_empty_final_response Triton would
    never send the flags-only final response and the stream would hang."""
    answer = await asyncio.wait_for(_answer(gateway, "streams end cleanly"), GUARD_S)
    assert answer == "streams end cleanly "


async def test_a_full_queue_is_refused_as_busy(gateway: TritonGateway) -> None:
    """One request holds the instance, one waits in the queue, the next is refused at once with
    `busy`; the waiting one is then served."""
    holding = gateway.stream_text(MODEL, "hold", PARAMS)
    assert await asyncio.wait_for(anext(holding), GUARD_S) == "held"  # the instance is taken
    second = asyncio.create_task(_answer(gateway, "waited my turn"))
    third = asyncio.create_task(_answer(gateway, "one too many"))
    done = await asyncio.wait_for(
        asyncio.gather(second, third, return_exceptions=True), GUARD_S + HOLD_MS / 1000
    )
    refused = [r for r in done if isinstance(r, BaseException)]
    served = [r for r in done if isinstance(r, str)]
    assert len(refused) == 1 and len(served) == 1, done
    assert isinstance(refused[0], ModelBusyError) and refused[0].code == "busy"
    assert isinstance(refused[0], ModelUnavailableError)  # callers that retry elsewhere still do
    assert served[0] in ("waited my turn ", "one too many ")
    await asyncio.wait_for(holding.aclose(), GUARD_S)
