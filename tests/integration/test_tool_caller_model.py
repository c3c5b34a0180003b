"""The deterministic tool-calling model (examples/models/tool-caller.yaml) through the session's
real tritonserver: its calls stream in small deltas over gRPC and ToolCallParser reassembles them.

Prompts are built as the API builds them: the model's catalog entry (kubechat's default ChatML
template), tools offered with tools_system_prompt, results written back with tool_results_turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kubechat.catalog import DEFAULT_CHAT_TEMPLATE, CatalogEntry, ChatTurn, WhitespaceCounter
from kubechat.core.resources import ToolCallFormat, load_chat_models
from kubechat.embedded.tritonserver import TritonServer
from kubechat.tools.formats import (
    ParsedOutput,
    ToolCallParser,
    assistant_tool_call_text,
    tool_results_turn,
    tools_system_prompt,
)
from kubechat.tools.types import MalformedToolCall, ToolCall, ToolSpec
from kubechat.triton.client import SamplingParams, TritonGateway
from tests.conftest import EXAMPLE_MODELS

pytestmark = pytest.mark.triton

MODEL = "tool-caller"
HERMES = ToolCallFormat.HERMES
TOOLS = [
    ToolSpec("demo__add", "Add two numbers.", {"type": "object", "properties": {"a": {}, "b": {}}}),
    ToolSpec("demo__echo", "Echo a text."),
]
PARAMS = SamplingParams(max_tokens=512)


@pytest.fixture
async def gateway(triton: TritonServer) -> AsyncIterator[TritonGateway]:
    client = TritonGateway(triton.grpc_url, timeout_s=60)
    yield client
    await client.close()


def prompt(*turns: ChatTurn) -> str:
    (model,) = load_chat_models([EXAMPLE_MODELS / f"{MODEL}.yaml"])
    entry = CatalogEntry(model, DEFAULT_CHAT_TEMPLATE, WhitespaceCounter(), {})
    system = ChatTurn("system", tools_system_prompt(model.spec.tools.format, TOOLS))
    return entry.build_prompt([system, *turns]).text


async def stream(gateway: TritonGateway, text: str) -> tuple[list[str], list[ParsedOutput]]:
    """The deltas Triton streamed, and what the parser made of them as they came."""
    parser = ToolCallParser(HERMES)
    deltas: list[str] = []
    items: list[ParsedOutput] = []
    async for delta in gateway.stream_text(MODEL, text, PARAMS):
        deltas.append(delta)
        items += parser.feed(delta)
    return deltas, items + parser.finish()


async def test_a_streamed_call_is_reassembled(gateway: TritonGateway) -> None:
    deltas, items = await stream(gateway, prompt(ChatTurn("user", 'call demo__add {"a": 2, "b": 3}')))
    assert len(deltas) > 10 and max(len(d) for d in deltas) <= 6  # the call arrives in pieces
    (call,) = items
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments) == ("demo__add", {"a": 2, "b": 3})
    assert "".join(deltas) == assistant_tool_call_text(HERMES, [call])


async def test_two_calls_in_one_answer(gateway: TritonGateway) -> None:
    question = 'call demo__echo {"text": "héllo"} and call demo__add {"a": 1, "b": 1}'
    _, items = await stream(gateway, prompt(ChatTurn("user", question)))
    assert [(i.name, i.arguments) for i in items if isinstance(i, ToolCall)] == [
        ("demo__echo", {"text": "héllo"}),
        ("demo__add", {"a": 1, "b": 1}),
    ]
    assert len(items) == 2


async def test_results_reach_the_model(gateway: TritonGateway) -> None:
    call = ToolCall("call_1", "demo__add", {"a": 2, "b": 3})
    role, content = tool_results_turn(HERMES, [(call, "5")])
    text = prompt(
        ChatTurn("user", 'call demo__add {"a": 2, "b": 3}'),
        ChatTurn("assistant", assistant_tool_call_text(HERMES, [call])),
        ChatTurn(role, content),
    )
    deltas, items = await stream(gateway, text)
    assert "".join(deltas) == "Tool results: demo__add: 5"
    assert all(isinstance(i, str) for i in items)  # plain text, no call


async def test_a_malformed_call(gateway: TritonGateway) -> None:
    _, items = await stream(gateway, prompt(ChatTurn("user", "call demo__add malformed")))
    (malformed,) = items
    assert isinstance(malformed, MalformedToolCall)
    assert "invalid JSON" in malformed.error


async def test_a_tool_not_offered(gateway: TritonGateway) -> None:
    _, items = await stream(gateway, prompt(ChatTurn("user", 'call web__fetch {"url": "x"}')))
    assert "".join(i for i in items if isinstance(i, str)) == "Tool web__fetch is not available."
