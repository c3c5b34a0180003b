"""Tests of kubechat.chat: the one generation path, its stored turn and its stateless completion.

Triton, the MCP tools and the knowledge bases are scripted (tests/scripted.py); the history is
real SQLite in tmp_path, the catalog the example ChatModels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from kubechat.catalog import ModelCatalog, load_catalog
from kubechat.chat import service as chat_service
from kubechat.chat.events import (
    ChatEvent,
    Done,
    Failure,
    Images,
    Sources,
    Started,
    Token,
    ToolCalled,
    ToolReturned,
)
from kubechat.chat.generation import Generation, TurnControl
from kubechat.chat.request import ChatMessage, ChatRequest, GenerationOptions
from kubechat.chat.service import ChatConfig, ChatService
from kubechat.core.errors import (
    InvalidRequestError,
    KnowledgeBaseUnavailableError,
    KubechatError,
    MessageTooLargeError,
    ModelNotFoundError,
    ModelUnavailableError,
)
from kubechat.images.processing import DEFAULT_IMAGE_LIMITS
from kubechat.images.service import ImageService
from kubechat.images.vision import VisionService
from kubechat.stores.history import Message, MessageStatus
from kubechat.stores.objects.files import FileObjectStore
from kubechat.stores.sqlite.history import SQLiteHistoryStore
from kubechat.tools.types import ToolSpec
from tests.conftest import EXAMPLE_MODELS
from tests.images import text_image
from tests.scripted import HOLD, FixedKnowledge, FunctionTools, Pause, ScriptedTriton, citation

CONFIG = ChatConfig(
    max_message_chars=200, history_turns=20, retrieval_sources=3, retrieval_candidates=10, tool_timeout_s=5
)
ALICE = "alice"
TOOLS = "tool-caller"  # the example model that calls tools, in the hermes format


def call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


class Sink:
    """What a stored turn sends its client."""

    def __init__(self) -> None:
        self.events: list[ChatEvent] = []
        self.message_ids: set[str] = set()

    async def __call__(self, message_id: str, event: ChatEvent) -> None:
        self.message_ids.add(message_id)
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.of(Token))

    @property
    def done(self) -> Done:
        assert isinstance(self.events[-1], Done), self.events
        return self.events[-1]


class Chat:
    """A chat service over scripted ports and a real SQLite history, with one session."""

    def __init__(self, service: ChatService, triton: ScriptedTriton, tools: FunctionTools) -> None:
        self.service = service
        self.store = service.store
        self.triton = triton
        self.tools = tools
        self.session = ""

    async def turn(self, content: str, control: TurnControl | None = None, **asked: Any) -> Sink:
        sink = Sink()
        request = ChatRequest([ChatMessage("user", content, images=asked.pop("images", ()))], **asked)
        await self.service.run_turn(ALICE, self.session, request, sink, control or TurnControl())
        return sink

    def start_turn(self, content: str, control: TurnControl, **asked: Any) -> tuple[Sink, asyncio.Task[None]]:
        sink = Sink()
        request = ChatRequest([ChatMessage("user", content)], **asked)
        task = asyncio.create_task(self.service.run_turn(ALICE, self.session, request, sink, control))
        return sink, task

    async def stored(self) -> list[Message]:
        return (await self.store.list_messages(ALICE, self.session, 100, None)).items


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> ModelCatalog:
    # No tokenizers in this state dir: every model counts words, as the synthetic one does.
    return load_catalog(EXAMPLE_MODELS, tmp_path_factory.mktemp("state"))


@pytest.fixture
async def chat(tmp_path: Path, catalog: ModelCatalog) -> AsyncIterator[Chat]:
    store = await SQLiteHistoryStore.open(tmp_path / "history.sqlite3")
    triton = ScriptedTriton()
    tools = FunctionTools(
        {
            "demo__add": lambda a: str(a["a"] + a["b"]),
            "demo__fail": lambda a: (_ for _ in ()).throw(RuntimeError("always fails")),
        }
    )
    images = ImageService(FileObjectStore(tmp_path / "objects"), DEFAULT_IMAGE_LIMITS)
    knowledge = FixedKnowledge({"handbook"}, [citation(1, "The codename is Heron."), citation(2, "Noise.")])
    vision = VisionService(catalog, triton, images)
    chat = Chat(ChatService(CONFIG, catalog, store, triton, knowledge, vision, tools), triton, tools)
    chat.session = (await store.create_session(ALICE, "test")).id
    yield chat
    await store.close()


async def events_of(generation: Generation) -> list[ChatEvent]:
    async with aclosing(generation.events()) as events:
        return [event async for event in events]


# -- the stored turn ----------------------------------------------------------------------------


async def test_a_turn_streams_its_events_and_stores_question_and_answer(chat: Chat) -> None:
    sink = await chat.turn("What is the capital of France?", model="synthetic")
    kinds = [type(e) for e in sink.events]
    # The scripted model's three deltas are ready together: one Token (kubechat.chat.coalesce)
    # whose seq is the last of them.
    assert (kinds[0], set(kinds[1:-1]), kinds[-1]) == (Started, {Token}, Done)
    (started,) = sink.of(Started)
    assert started.model == "synthetic" and started.prompt_tokens > 0
    assert sink.of(Token)[-1].seq == 3 and "".join(t.text for t in sink.of(Token)) == "Hello there."
    done = sink.done
    assert done.status is MessageStatus.COMPLETE
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.timings.time_to_first_token_ms is not None

    question, answer = await chat.stored()
    assert (question.role, question.content, question.id) == (
        "user", "What is the capital of France?", started.user_message_id,
    )  # fmt: skip
    assert (answer.status, answer.content) == (MessageStatus.COMPLETE, sink.text)
    assert sink.message_ids == {answer.id}
    assert answer.prompt_tokens == started.prompt_tokens
    assert answer.completion_tokens == done.usage.completion_tokens
    assert chat.triton.requests[0].request_id == answer.id


async def test_the_next_turn_is_asked_with_the_history(chat: Chat) -> None:
    await chat.turn("My name is Zorblax.", model="synthetic")
    await chat.turn("What is my name?", model="synthetic")
    prompt = chat.triton.requests[1].prompt
    assert prompt.index("Zorblax") < prompt.index("Hello there.") < prompt.index("What is my name?")


async def test_options_override_the_models_defaults(chat: Chat) -> None:
    options = GenerationOptions(temperature=0.7, max_tokens=9, stop=["x"], seed=3)
    await chat.turn("hi", model="synthetic", options=options)
    params = chat.triton.requests[0].params
    assert (params.temperature, params.max_tokens, tuple(params.stop), params.seed) == (0.7, 9, ("x",), 3)


@pytest.mark.parametrize(
    ("asked", "error"),
    [
        ({"content": "x" * 201}, MessageTooLargeError),
        ({"model": "no-such-model"}, ModelNotFoundError),
        ({"model": "minilm"}, ModelNotFoundError),
        ({"options": GenerationOptions(max_tokens=10**6)}, InvalidRequestError),
        ({"model": "synthetic", "mcp_tools": True}, InvalidRequestError),
        ({"knowledge_bases": ["nope"]}, KubechatError),
    ],
)
async def test_a_refused_message_leaves_no_trace(
    chat: Chat, asked: dict[str, Any], error: type[KubechatError]
) -> None:
    content = asked.pop("content", "hi")
    with pytest.raises(error):
        await chat.turn(content, **asked)
    assert await chat.stored() == []
    assert chat.triton.requests == []


async def test_a_stop_ends_the_answer_with_done_and_keeps_what_streamed(chat: Chat) -> None:
    chat.triton.answer(["Once", " upon", HOLD, " a time"])
    control = TurnControl()
    sink, task = chat.start_turn("Tell me a story.", control, model="synthetic")
    await chat.triton.holding.wait()
    control.request_stop(task, MessageStatus.STOPPED)
    await task  # a user's stop is not the task's cancellation

    assert sink.done.status is MessageStatus.STOPPED
    assert sink.text == "Once upon"
    assert chat.triton.closed_streams == 1, "the model's stream was not closed"
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.content) == (MessageStatus.STOPPED, "Once upon")


async def test_a_stop_before_the_model_is_asked_still_ends_with_done(chat: Chat) -> None:
    control = TurnControl()
    control.stop_requested, control.stop_status = True, MessageStatus.STOPPED
    sink = await chat.turn("hi", control, model="synthetic")
    assert [type(e) for e in sink.events] == [Started, Done]
    assert sink.done.status is MessageStatus.STOPPED
    assert chat.triton.requests == []
    assert (await chat.stored())[-1].status is MessageStatus.STOPPED


async def test_a_client_that_leaves_mid_answer_is_interrupted(chat: Chat) -> None:
    chat.triton.answer(["Once", HOLD, " more"])
    control = TurnControl()
    sink, task = chat.start_turn("Tell me a story.", control, model="synthetic")
    await chat.triton.holding.wait()
    control.request_stop(task, MessageStatus.INTERRUPTED)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not sink.of(Done)
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.content) == (MessageStatus.INTERRUPTED, "Once")
    assert chat.triton.closed_streams == 1


async def test_a_stop_that_lands_while_a_token_is_sent_stores_only_what_was_sent(chat: Chat) -> None:
    """A stop cancels the turn wherever it waits, the sink included: the token being sent then
    never reached the client, and the stored answer must be the deltas the client has (found by
    tests/api/test_socket_properties.py)."""
    chat.triton.answer(["Once", Pause(0.01), " upon", Pause(0.01), " a time"])  # one Token each
    control = TurnControl()
    received: list[str] = []

    async def sink(_message_id: str, event: ChatEvent) -> None:
        if isinstance(event, Token) and event.seq == 2:
            control.request_stop(task, MessageStatus.STOPPED)
            await asyncio.sleep(0)  # the send's await, where the cancellation lands
        if isinstance(event, Token):
            received.append(event.text)

    request = ChatRequest([ChatMessage("user", "Tell me a story.")], model="synthetic")
    task = asyncio.create_task(chat.service.run_turn(ALICE, chat.session, request, sink, control))
    await task
    assert received == ["Once"]
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.content) == (MessageStatus.STOPPED, "Once")


async def test_a_client_gone_mid_answer_ends_the_turn_unreported(chat: Chat) -> None:
    """ClientGone from the sink: stored as interrupted, with what the client received."""
    chat.triton.answer(["Once", Pause(0.01), " upon", Pause(0.01), " a time"])  # one Token each

    async def sink(_message_id: str, event: ChatEvent) -> None:
        if isinstance(event, Token) and event.seq == 2:
            raise chat_service.ClientGone

    request = ChatRequest([ChatMessage("user", "Tell me a story.")], model="synthetic")
    with pytest.raises(chat_service.ClientGone):
        await chat.service.run_turn(ALICE, chat.session, request, sink, TurnControl())
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.content) == (MessageStatus.INTERRUPTED, "Once")


async def test_an_unexpected_failure_fails_the_turn_with_internal_error(chat: Chat) -> None:
    chat.triton.answer(["Once", OverflowError("Python int too large to convert to C long")])
    sink = await chat.turn("Tell me a story.", model="synthetic")
    (failure,) = sink.of(Failure)
    assert failure.error.code == "internal_error" and "Python int" not in failure.error.message
    assert sink.done.status is MessageStatus.FAILED
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.content, answer.error_code) == (
        MessageStatus.FAILED,
        "Once",
        "internal_error",
    )


async def test_the_answer_is_checkpointed_while_it_streams(
    chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat.service.checkpoints, "interval_s", 0.01)
    chat.triton.answer(["Half", " way", HOLD, " there"])
    control = TurnControl()
    _, task = chat.start_turn("go", control, model="synthetic")
    await chat.triton.holding.wait()
    await asyncio.sleep(0.1)  # ten intervals of the checkpoints' task
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.content) == (MessageStatus.STREAMING, "Half way")
    chat.triton.release.set()
    await task
    assert (await chat.stored())[-1].status is MessageStatus.COMPLETE


async def test_a_model_failing_mid_answer_fails_the_turn_with_its_code(chat: Chat) -> None:
    chat.triton.answer(["token0", " token1", ModelUnavailableError("model synthetic failed: gone")])
    sink = await chat.turn("go", model="synthetic")
    assert [type(e) for e in sink.events][-2:] == [Failure, Done]
    assert sink.of(Failure)[0].error.code == "model_unavailable"
    assert sink.done.status is MessageStatus.FAILED
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.error_code, answer.content) == (
        MessageStatus.FAILED, "model_unavailable", "token0 token1",
    )  # fmt: skip


# -- grounding: sources and images ------------------------------------------------------------


async def test_sources_are_cited_in_the_prompt_sent_and_stored(chat: Chat) -> None:
    sink = await chat.turn("What is the codename?", model="synthetic", knowledge_bases=["handbook"])
    assert [type(e) for e in sink.events][:2] == [Started, Sources]
    (sources,) = sink.of(Sources)
    assert [s.n for s in sources.sources] == [1, 2]
    assert "[1] (doc1.md)\nThe codename is Heron." in chat.triton.requests[0].prompt
    question, answer = await chat.stored()
    assert question.content == "What is the codename?"  # the user's words, not the prompt
    assert answer.sources == [s.model_dump() for s in sources.sources]


async def test_a_retrieval_failure_stores_the_question_and_fails_the_answer(chat: Chat) -> None:
    knowledge = chat.service.knowledge
    assert isinstance(knowledge, FixedKnowledge)
    knowledge.failure = KnowledgeBaseUnavailableError("its index was built with another embedder")
    sink = await chat.turn("What is the codename?", model="synthetic", knowledge_bases=["handbook"])
    assert [type(e) for e in sink.events] == [Started, Sources, Failure, Done]
    assert sink.of(Sources)[0].sources == []
    assert sink.done.status is MessageStatus.FAILED
    _, answer = await chat.stored()
    assert (answer.status, answer.error_code) == (MessageStatus.FAILED, "knowledge_base_unavailable")
    assert chat.triton.requests == []


async def test_a_text_only_model_is_given_the_images_description(chat: Chat) -> None:
    image, _ = await chat.service.vision.images.upload(ALICE, "sign.png", text_image(["hello"]))
    chat.triton.descriptions.append("A sign that says HELLO.")
    sink = await chat.turn("What does it say?", model="synthetic", images=[image.id])
    (images,) = sink.of(Images)
    assert [(i.id, i.description) for i in images.images] == [(image.id, "A sign that says HELLO.")]
    assert chat.triton.described == [("ocr", "What does it say?")]
    assert "A sign that says HELLO." in chat.triton.requests[0].prompt
    assert chat.triton.requests[0].image is None
    question, _ = await chat.stored()
    assert question.images == [i.model_dump() for i in images.images]  # later turns keep it


# -- tools ------------------------------------------------------------------------------------


async def test_mcp_tools_run_in_rounds_and_are_stored_with_the_answer(chat: Chat) -> None:
    chat.triton.answer(
        ["Let me add. ", call("demo__add", '{"a": 2, "b": 3}')],
        ["demo__add: 5"],
    )
    sink = await chat.turn("add 2 and 3", model=TOOLS, mcp_tools=True)
    kinds = [type(e) for e in sink.events if not isinstance(e, Token)]
    assert kinds == [Started, ToolCalled, ToolReturned, Done]
    (called,) = sink.of(ToolCalled)
    (returned,) = sink.of(ToolReturned)
    assert (called.call.name, called.call.arguments) == ("demo__add", {"a": 2, "b": 3})
    assert (returned.result.id, returned.result.ok, returned.result.content) == (called.call.id, True, "5")
    assert sink.text.startswith("Let me add.") and sink.text.endswith("demo__add: 5")
    assert sink.done.status is MessageStatus.COMPLETE

    first, second = chat.triton.requests
    assert "<tools>" in first.prompt and "demo__add" in first.prompt
    assert '<tool_response>\n{"name": "demo__add", "content": "5"}' in second.prompt
    assert second.request_id == f"{first.request_id}-1"
    answer = (await chat.stored())[-1]
    assert [(t["name"], t["ok"], t["content"]) for t in answer.tool_calls] == [("demo__add", True, "5")]


async def test_a_failing_tool_is_a_result_the_model_is_told_about(chat: Chat) -> None:
    chat.triton.answer([call("demo__fail", "{}")], ["sorry"])
    sink = await chat.turn("fail", model=TOOLS, mcp_tools=True)
    (returned,) = sink.of(ToolReturned)
    assert (returned.result.ok, returned.result.error_code) == (False, "tool_error")
    assert "error (tool_error): always fails" in chat.triton.requests[1].prompt
    assert sink.done.status is MessageStatus.COMPLETE


async def test_a_tool_that_was_not_offered_is_never_called(chat: Chat) -> None:
    chat.triton.answer([call("web__secret", "{}")], ["ok"])
    sink = await chat.turn("call it", model=TOOLS, mcp_tools=True)
    (returned,) = sink.of(ToolReturned)
    assert (returned.result.ok, returned.result.error_code) == (False, "unknown_tool")
    assert chat.tools.calls == []


async def test_a_malformed_call_is_reported_and_fed_back(chat: Chat) -> None:
    chat.triton.answer(["<tool_call>\nnot json\n</tool_call>"], ["I will try again."])
    sink = await chat.turn("call badly", model=TOOLS, mcp_tools=True)
    assert sink.of(ToolCalled) == []
    (returned,) = sink.of(ToolReturned)
    assert (returned.result.name, returned.result.error_code) == ("invalid_tool_call", "malformed_tool_call")
    assert "malformed tool call" in chat.triton.requests[1].prompt
    assert sink.done.status is MessageStatus.COMPLETE


async def test_a_model_that_keeps_calling_fails_with_tool_rounds_exceeded(chat: Chat) -> None:
    chat.triton.default = [call("demo__add", '{"a": 1, "b": 1}')]
    sink = await chat.turn("loop", model=TOOLS, mcp_tools=True)
    max_rounds = chat.service.catalog.get(TOOLS).model.spec.tools.max_rounds
    assert len(chat.triton.requests) == max_rounds + 1
    assert len(sink.of(ToolReturned)) == max_rounds
    assert sink.of(Failure)[0].error.code == "tool_rounds_exceeded"
    answer = (await chat.stored())[-1]
    assert (answer.status, answer.error_code) == (MessageStatus.FAILED, "tool_rounds_exceeded")
    assert len(answer.tool_calls) == max_rounds + 1  # the last round's call, never run, too


async def test_a_stop_while_a_tool_runs_keeps_the_call(chat: Chat) -> None:
    started = asyncio.Event()

    async def slow(name: str, arguments: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        started.set()
        await asyncio.sleep(30)

    chat.tools.call = slow  # type: ignore[method-assign]
    chat.triton.answer([call("demo__add", '{"a": 1, "b": 2}')])
    control = TurnControl()
    sink, task = chat.start_turn("slowly", control, model=TOOLS, mcp_tools=True)
    await started.wait()
    control.request_stop(task, MessageStatus.STOPPED)
    await task
    assert sink.done.status is MessageStatus.STOPPED and sink.of(ToolReturned) == []
    answer = (await chat.stored())[-1]
    assert [(t["name"], t["ok"]) for t in answer.tool_calls] == [("demo__add", None)]


# -- the stateless completion -----------------------------------------------------------------


WEATHER = ToolSpec("get_weather", "Weather of a city.", {"type": "object", "properties": {}})


async def test_a_completion_stores_nothing(chat: Chat) -> None:
    request = ChatRequest([ChatMessage("system", "be brief"), ChatMessage("user", "hi")], model="synthetic")
    generation = await chat.service.complete(ALICE, request, "chatcmpl-1")
    events = await events_of(generation)
    assert [type(e) for e in events] == [Started, Token, Token, Token, Done]
    assert generation.text == "Hello there."
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"
    assert chat.triton.requests[0].request_id == "chatcmpl-1"
    assert "be brief" in chat.triton.requests[0].prompt
    assert await chat.stored() == []


async def test_a_completion_that_uses_every_token_finishes_for_length(chat: Chat) -> None:
    chat.triton.answer(["one ", "two "])
    request = ChatRequest(
        [ChatMessage("user", "count")], model="synthetic", options=GenerationOptions(max_tokens=2)
    )
    events = await events_of(await chat.service.complete(ALICE, request, "c"))
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "length"


async def test_client_tools_are_offered_and_their_calls_handed_back(chat: Chat) -> None:
    chat.triton.answer([call("get_weather", '{"city": "Oslo"}')])
    request = ChatRequest([ChatMessage("user", "weather in Oslo?")], model=TOOLS, client_tools=[WEATHER])
    generation = await chat.service.complete(ALICE, request, "c")
    events = await events_of(generation)
    (called,) = [e for e in events if isinstance(e, ToolCalled)]
    assert (called.call.name, called.call.arguments) == ("get_weather", {"city": "Oslo"})
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"
    assert not any(isinstance(e, ToolReturned) for e in events)
    assert len(chat.triton.requests) == 1 and chat.tools.calls == []
    assert (
        "get_weather" in chat.triton.requests[0].prompt and "demo__add" not in chat.triton.requests[0].prompt
    )

    # The client runs it and sends the result back: the model reads it in its own format.
    followup = ChatRequest(
        [
            ChatMessage("user", "weather in Oslo?"),
            ChatMessage("assistant", "", tool_calls=[called.call]),
            ChatMessage("tool", "Sunny", tool_call_id=called.call.id),
        ],
        model=TOOLS, client_tools=[WEATHER],
    )  # fmt: skip
    await events_of(await chat.service.complete(ALICE, followup, "c2"))
    prompt = chat.triton.requests[1].prompt
    assert '"name": "get_weather", "arguments": {"city": "Oslo"}' in prompt
    assert '<tool_response>\n{"name": "get_weather", "content": "Sunny"}' in prompt


async def test_a_malformed_call_of_a_client_tool_is_shown_as_text(chat: Chat) -> None:
    chat.triton.answer(["<tool_call>\nnot json\n</tool_call>"])
    request = ChatRequest([ChatMessage("user", "weather?")], model=TOOLS, client_tools=[WEATHER])
    generation = await chat.service.complete(ALICE, request, "c")
    events = await events_of(generation)
    assert not any(isinstance(e, ToolCalled) for e in events)
    assert "not json" in generation.text
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"


async def test_client_tools_need_a_model_that_calls_tools(chat: Chat) -> None:
    request = ChatRequest([ChatMessage("user", "weather?")], model="synthetic", client_tools=[WEATHER])
    with pytest.raises(InvalidRequestError, match="does not call tools"):
        await chat.service.complete(ALICE, request, "c")


async def test_a_completion_refuses_before_it_starts_what_grounding_cannot_do(chat: Chat) -> None:
    knowledge = chat.service.knowledge
    assert isinstance(knowledge, FixedKnowledge)
    knowledge.failure = KnowledgeBaseUnavailableError("no index")
    request = ChatRequest([ChatMessage("user", "codename?")], model="synthetic", knowledge_bases=["handbook"])
    with pytest.raises(KnowledgeBaseUnavailableError):
        await chat.service.complete(ALICE, request, "c")
    after_a_reply = ChatRequest(
        [ChatMessage("user", "codename?"), ChatMessage("assistant", "Heron")],
        model="synthetic", knowledge_bases=["handbook"],
    )  # fmt: skip
    with pytest.raises(InvalidRequestError, match="end with a user message"):
        await chat.service.complete(ALICE, after_a_reply, "c")
    assert chat.triton.requests == []


async def test_a_completion_failing_mid_stream_ends_with_failure_then_done(chat: Chat) -> None:
    chat.triton.answer(["a", ModelUnavailableError("model synthetic failed")])
    request = ChatRequest([ChatMessage("user", "go")], model="synthetic")
    events = await events_of(await chat.service.complete(ALICE, request, "c"))
    assert [type(e) for e in events] == [Started, Token, Failure, Done]
    assert isinstance(events[-1], Done) and events[-1].status is MessageStatus.FAILED
