"""Tests of the deterministic tool-calling model's engine (kubechat.engines.tool_caller), on prompts
rendered exactly as kubechat renders them: the example ChatModel's catalog entry (no tokenizer,
so kubechat's default ChatML template), tools offered with tools_system_prompt, calls and results
written back with assistant_tool_call_text and tool_results_turn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from kubechat.catalog import DEFAULT_CHAT_TEMPLATE, CatalogEntry, ChatTurn, WhitespaceCounter
from kubechat.core.resources import ToolCallFormat, load_chat_models
from kubechat.engines.generation import GenerationRequest
from kubechat.engines.tool_caller import (
    DELTA_SIZES,
    ToolCallerGenerator,
    Turn,
    answer,
    chatml_turns,
    deltas,
    offered_tools,
)
from kubechat.tools.formats import (
    ParsedOutput,
    ToolCallParser,
    assistant_tool_call_text,
    tool_results_turn,
    tools_system_prompt,
)
from kubechat.tools.types import MalformedToolCall, ToolCall, ToolSpec

HERMES = ToolCallFormat.HERMES
LLAMA3 = ToolCallFormat.LLAMA3_JSON
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "models" / "tool-caller.yaml"
ADD = ToolSpec("demo__add", "Add two numbers.", {"type": "object", "properties": {"a": {}, "b": {}}})
ECHO = ToolSpec("demo__echo", "Echo a text.")
NOW = ToolSpec("web__now", "The time.")
TOOLS = [ADD, ECHO, NOW]


def entry(fmt: ToolCallFormat) -> CatalogEntry:
    """The example model's catalog entry, as kubechat.catalog builds it without a tokenizer."""
    (model,) = load_chat_models([EXAMPLE])
    tools = model.spec.tools.model_copy(update={"format": fmt})
    model = model.model_copy(update={"spec": model.spec.model_copy(update={"tools": tools})})
    return CatalogEntry(model, DEFAULT_CHAT_TEMPLATE, WhitespaceCounter(), {})


def prompt(fmt: ToolCallFormat, *turns: ChatTurn, tools: Sequence[ToolSpec] = TOOLS) -> str:
    system = (
        [ChatTurn("system", "You are a test model.\n\n" + tools_system_prompt(fmt, tools))] if tools else []
    )
    return entry(fmt).build_prompt([*system, *turns]).text


def parsed(fmt: ToolCallFormat, text: str) -> list[ParsedOutput]:
    parser = ToolCallParser(fmt)
    items = [item for piece in deltas(text) for item in parser.feed(piece)]
    return items + parser.finish()


def calls(items: Sequence[ParsedOutput]) -> list[tuple[str, object]]:
    return [(item.name, item.arguments) for item in items if isinstance(item, ToolCall)]


def test_the_example_model_declares_hermes_tools() -> None:
    (model,) = load_chat_models([EXAMPLE])
    assert model.spec.engine.backend == "tool-caller"
    assert model.spec.tools.format is HERMES
    assert [str(c) for c in model.spec.capabilities] == ["chat", "tools"]


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
def test_the_offered_tools_are_read_back_from_the_prompt(fmt: ToolCallFormat) -> None:
    turns = chatml_turns(prompt(fmt, ChatTurn("user", "hi")))
    assert [t.role for t in turns] == ["system", "user"]
    assert offered_tools(fmt, turns) == ["demo__add", "demo__echo", "web__now"]


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
def test_a_requested_call_is_written_in_the_format(fmt: ToolCallFormat) -> None:
    text = answer(fmt, prompt(fmt, ChatTurn("user", 'Please call demo__add {"a": 2, "b": 3} for me.')))
    assert text == assistant_tool_call_text(fmt, [ToolCall("", "demo__add", {"a": 2, "b": 3})])
    assert calls(parsed(fmt, text)) == [("demo__add", {"a": 2, "b": 3})]


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
def test_several_clauses_are_several_calls_in_order(fmt: ToolCallFormat) -> None:
    question = (
        'call demo__echo {"text": "call web__now {}"} then CALL demo__add {"a": 1, "b": 2}, call web__now'
    )
    text = answer(fmt, prompt(fmt, ChatTurn("user", question)))
    assert calls(parsed(fmt, text)) == [
        ("demo__echo", {"text": "call web__now {}"}),  # a clause inside arguments is not one
        ("demo__add", {"a": 1, "b": 2}),
        ("web__now", {}),  # an offered tool may be called without arguments
    ]


def test_only_the_last_user_turn_asks() -> None:
    text = answer(
        HERMES,
        prompt(
            HERMES,
            ChatTurn("user", 'call demo__add {"a": 1, "b": 1}'),
            ChatTurn("assistant", "Tool results: demo__add: 2"),
            ChatTurn("user", "Thanks, that is all for today"),
        ),
    )
    assert text == "No tool needed: Thanks, that is all for today"


def test_no_call_asked_is_a_plain_answer_of_the_first_words() -> None:
    question = "What is the capital of France and why is it so pretty?"
    assert answer(HERMES, prompt(HERMES, ChatTurn("user", question))) == (
        "No tool needed: What is the capital of France and why"
    )
    # "call" followed by something that is neither an offered tool nor arguments is no clause.
    assert (
        answer(HERMES, prompt(HERMES, ChatTurn("user", "call me later"))) == "No tool needed: call me later"
    )


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
def test_a_tool_not_offered_is_not_called(fmt: ToolCallFormat) -> None:
    question = 'call demo__add {"a": 1} and call web__echo {"text": "x"} and call x__y {}'
    text = answer(fmt, prompt(fmt, ChatTurn("user", question)))
    assert text == "Tool web__echo is not available. Tool x__y is not available."
    items = parsed(fmt, text)
    assert calls(items) == [] and "".join(i for i in items if isinstance(i, str)) == text


def test_without_tools_in_the_prompt_nothing_is_available() -> None:
    text = answer(HERMES, prompt(HERMES, ChatTurn("user", 'call demo__add {"a": 1}'), tools=[]))
    assert text == "Tool demo__add is not available."


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
def test_malformed_asks_for_a_broken_call(fmt: ToolCallFormat) -> None:
    text = answer(fmt, prompt(fmt, ChatTurn("user", "call demo__add malformed")))
    (item,) = parsed(fmt, text)
    assert isinstance(item, MalformedToolCall)
    assert "invalid JSON" in item.error


def test_unparsable_arguments_are_a_broken_call_too() -> None:
    text = answer(HERMES, prompt(HERMES, ChatTurn("user", "call demo__add {a: 1}")))
    assert text == '<tool_call>\n{"name": "demo__add", "arguments": {broken\n</tool_call>'


def test_a_broken_call_among_good_ones_hermes() -> None:
    question = 'call demo__add malformed; call demo__echo {"text": "ok"}'
    items = parsed(HERMES, answer(HERMES, prompt(HERMES, ChatTurn("user", question))))
    assert isinstance(items[0], MalformedToolCall)
    assert calls(items) == [("demo__echo", {"text": "ok"})]


def with_results(
    fmt: ToolCallFormat, results: Sequence[tuple[ToolCall, str]], *, one_turn: bool = True
) -> str:
    """The prompt of the round after the calls: the calls and their results written back."""
    made = [call for call, _ in results]
    written = (
        [tool_results_turn(fmt, results)] if one_turn else [tool_results_turn(fmt, [r]) for r in results]
    )
    return prompt(
        fmt,
        ChatTurn("user", "call them"),
        ChatTurn("assistant", assistant_tool_call_text(fmt, made)),
        *(ChatTurn(role, content) for role, content in written),
    )


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
@pytest.mark.parametrize("one_turn", [True, False], ids=["one-turn", "a-turn-per-result"])
def test_results_are_quoted_in_plain_text(fmt: ToolCallFormat, one_turn: bool) -> None:
    """Every result reaches the model: it quotes them all, whether they came in one turn (the chat
    loop) or one turn each (OpenAI-style `tool` messages)."""
    results = [
        (ToolCall("call_1", "demo__add", {"a": 2, "b": 3}), "5"),
        (ToolCall("call_2", "demo__echo", {"text": "hi"}), 'hi "there"\nsecond line'),
    ]
    text = answer(fmt, with_results(fmt, results, one_turn=one_turn))
    assert text == 'Tool results: demo__add: 5; demo__echo: hi "there"\nsecond line'
    assert "".join(i for i in parsed(fmt, text) if isinstance(i, str)) == text


def test_a_new_question_after_results_is_answered_afresh() -> None:
    results = [(ToolCall("call_1", "demo__add", {"a": 2, "b": 3}), "5")]
    role, content = tool_results_turn(HERMES, results)
    text = answer(
        HERMES,
        prompt(
            HERMES,
            ChatTurn("user", 'call demo__add {"a": 2, "b": 3}'),
            ChatTurn("assistant", assistant_tool_call_text(HERMES, [results[0][0]])),
            ChatTurn(role, content),
            ChatTurn("assistant", "Tool results: demo__add: 5"),
            ChatTurn("user", "call web__now"),
        ),
    )
    assert calls(parsed(HERMES, text)) == [("web__now", {})]


def test_a_prompt_that_is_not_chatml_is_one_user_turn() -> None:
    assert chatml_turns("call demo__add {}") == [Turn("user", "call demo__add {}")]
    assert answer(HERMES, "just words") == "No tool needed: just words"


def test_deltas_are_a_few_characters_each_and_join_to_the_text() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(100))
    pieces = list(deltas(text))
    assert "".join(pieces) == text
    assert [len(p) for p in pieces[: len(DELTA_SIZES)]] == list(DELTA_SIZES)
    assert max(len(p) for p in pieces) <= max(DELTA_SIZES)


def generate(
    text_prompt: str, max_tokens: int = 512, stop: Sequence[str] = (), cancel_after: int = -1
) -> list[str]:
    seen: list[str] = []
    generator = ToolCallerGenerator(HERMES)
    request = GenerationRequest(prompt=text_prompt, max_tokens=max_tokens, stop=tuple(stop))
    for delta in generator.generate(request, lambda: len(seen) == cancel_after):
        seen.append(delta)
    return seen


def test_the_generator_streams_the_answer() -> None:
    text_prompt = prompt(HERMES, ChatTurn("user", 'call demo__add {"a": 2, "b": 3}'))
    pieces = generate(text_prompt)
    assert "".join(pieces) == answer(HERMES, text_prompt)
    assert len(pieces) > 10 and max(len(p) for p in pieces) <= max(DELTA_SIZES)


def test_the_generator_stops_at_max_tokens_a_stop_word_or_cancellation() -> None:
    text_prompt = prompt(HERMES, ChatTurn("user", 'call demo__add {"a": 2, "b": 3}'))
    full = answer(HERMES, text_prompt)
    assert "".join(generate(text_prompt, max_tokens=3)) == full[: sum(DELTA_SIZES[:3])]
    assert "".join(generate(text_prompt, stop=['"arguments"'])) == full[: full.index('"arguments"')]
    assert len(generate(text_prompt, cancel_after=4)) == 4


def test_a_call_cut_by_max_tokens_is_malformed_to_the_parser() -> None:
    """What a real model's truncated call looks like: the loop reports it, not a silent nothing."""
    text_prompt = prompt(HERMES, ChatTurn("user", 'call demo__add {"a": 2, "b": 3}'))
    (item,) = parsed(HERMES, "".join(generate(text_prompt, max_tokens=10)))
    assert isinstance(item, MalformedToolCall) and "unterminated" in item.error


def test_results_json_content_is_quoted_as_json() -> None:
    """A result turn whose content is not a string (another client's JSON) is still quoted."""
    turn = Turn("user", '<tool_response>\n{"name": "demo__add", "content": {"sum": 5}}\n</tool_response>')
    text = answer(HERMES, f"<|im_start|>{turn.role}\n{turn.content}<|im_end|>\n<|im_start|>assistant\n")
    assert text == f"Tool results: demo__add: {json.dumps({'sum': 5})}"
