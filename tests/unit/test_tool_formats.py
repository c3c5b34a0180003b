"""Tests of the tool-call formats (kubechat.tools.formats): the prompt text that offers tools, the
turns calls and results are written back as, and the incremental parser of model output."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kubechat.catalog import DEFAULT_CHAT_TEMPLATE
from kubechat.core.resources import ToolCallFormat
from kubechat.tools.formats import (
    LLAMA3_TOOLS_PREAMBLE,
    PYTHON_TAG,
    ParsedOutput,
    ToolCallParser,
    assistant_tool_call_text,
    tool_results_turn,
    tools_system_prompt,
)
from kubechat.tools.types import MalformedToolCall, ToolCall, ToolSpec

HERMES = ToolCallFormat.HERMES
LLAMA3 = ToolCallFormat.LLAMA3_JSON

ADD = ToolSpec(
    "demo__add",
    "Add two numbers.",
    {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
)
ECHO = ToolSpec("web__echo", "Echo a text back: «unicode» stays as is.")
TOOLS = [ADD, ECHO]


def function(tool: ToolSpec) -> dict[str, object]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
    }


def parse(fmt: ToolCallFormat, deltas: Sequence[str]) -> list[ParsedOutput]:
    """Feed every delta, then finish; adjacent texts joined (how they were cut is not the point)."""
    parser = ToolCallParser(fmt)
    items: list[ParsedOutput] = []
    for delta in deltas:
        items += parser.feed(delta)
    items += parser.finish()
    joined: list[ParsedOutput] = []
    for item in items:
        if isinstance(item, str) and joined and isinstance(joined[-1], str):
            joined[-1] += item
        else:
            joined.append(item)
    return joined


def comparable(items: Sequence[ParsedOutput]) -> list[object]:
    """Calls without their (random) ids."""
    return [(item.name, item.arguments) if isinstance(item, ToolCall) else item for item in items]


# --- offering tools --------------------------------------------------------------------------------


def test_hermes_offers_tools_as_qwen25s_template_does() -> None:
    """Word for word Qwen2.5's tools block: one JSON line per tool inside <tools>, then how to call."""
    text = tools_system_prompt(HERMES, [ADD])
    assert text == (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(function(ADD))
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def test_hermes_lists_every_tool_on_a_line_of_its_own() -> None:
    text = tools_system_prompt(HERMES, TOOLS)
    listing = text.split("\n<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert [json.loads(line) for line in listing.splitlines()] == [function(t) for t in TOOLS]
    assert "«unicode»" in text  # not \u-escaped: the model reads what a person would


def test_llama3_offers_tools_as_llama31s_template_does() -> None:
    """Llama 3.1's custom-tools text, each tool as JSON indented by 4, separated by blank lines."""
    text = tools_system_prompt(LLAMA3, TOOLS)
    assert text.startswith(
        "Given the following functions, please respond with a JSON for a function call with its proper "
        "arguments that best answers the given prompt.\n\nRespond in the format "
        '{"name": function name, "parameters": dictionary of argument name and its value}.Do not use '
        "variables.\n\n"
    )
    listed = text.removeprefix(LLAMA3_TOOLS_PREAMBLE)
    assert listed == "\n\n".join(json.dumps(function(t), indent=4, ensure_ascii=False) for t in TOOLS)


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
def test_no_tools_offer_nothing(fmt: ToolCallFormat) -> None:
    assert tools_system_prompt(fmt, []) == ""


def test_formats_may_be_given_as_strings() -> None:
    """The ChatModel's value works as well as the enum (both are what spec.tools.format holds)."""
    assert tools_system_prompt(ToolCallFormat("llama3-json"), [ADD]).startswith("Given the following")
    assert ToolCallParser(ToolCallFormat("hermes")).format is HERMES


# --- calls and results in the history ------------------------------------------------------------

CALLS = [ToolCall("call_1", "demo__add", {"a": 2, "b": 3}), ToolCall("call_2", "web__echo", {"text": "é"})]


def test_hermes_assistant_turn_is_tool_call_blocks() -> None:
    assert assistant_tool_call_text(HERMES, CALLS) == (
        '<tool_call>\n{"name": "demo__add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
        '<tool_call>\n{"name": "web__echo", "arguments": {"text": "é"}}\n</tool_call>'
    )


def test_llama3_assistant_turn_is_json_calls_separated_by_semicolons() -> None:
    assert assistant_tool_call_text(LLAMA3, CALLS) == (
        '{"name": "demo__add", "parameters": {"a": 2, "b": 3}}; '
        '{"name": "web__echo", "parameters": {"text": "é"}}'
    )


@pytest.mark.parametrize("fmt", list(ToolCallFormat))
def test_written_calls_parse_back(fmt: ToolCallFormat) -> None:
    """What the history says the model wrote is what the parser reads as the same calls."""
    parsed = parse(fmt, [assistant_tool_call_text(fmt, CALLS)])
    assert comparable(parsed) == [(c.name, c.arguments) for c in CALLS]


def render(messages: list[dict[str, str]]) -> str:
    """kubechat's default template (ChatML), configured as kubechat.catalog configures it."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(DEFAULT_CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)


def test_hermes_results_are_a_user_turn_of_tool_responses() -> None:
    """Rendered by the default ChatML template, the turn reads as Qwen2.5's template renders tool
    messages: one user turn, a <tool_response> block per result."""
    role, content = tool_results_turn(HERMES, [(CALLS[0], "5"), (CALLS[1], 'multi\nline "é"')])
    assert role == "user"
    assert content == (
        '<tool_response>\n{"name": "demo__add", "content": "5"}\n</tool_response>\n'
        '<tool_response>\n{"name": "web__echo", "content": "multi\\nline \\"é\\""}\n</tool_response>'
    )
    assert render([{"role": role, "content": content}]) == f"<|im_start|>user\n{content}<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )


def test_llama3_results_are_an_ipython_turn_of_json_lines() -> None:
    role, content = tool_results_turn(LLAMA3, [(CALLS[0], "5"), (CALLS[1], "two\nlines")])
    assert role == "ipython"
    assert [json.loads(line) for line in content.splitlines()] == [
        {"name": "demo__add", "output": "5"},
        {"name": "web__echo", "output": "two\nlines"},
    ]
    assert render([{"role": role, "content": content}]).startswith(
        f"<|im_start|>ipython\n{content}<|im_end|>"
    )


# --- parsing hermes output ----------------------------------------------------------------------------

CALL_ADD = '<tool_call>\n{"name": "demo__add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
CALL_ECHO = (
    '<tool_call>\n{"name": "web__echo", "arguments": {"text": "a <b>tag</b> and braces {}"}}\n</tool_call>'
)


def test_plain_text_streams_through_as_it_comes() -> None:
    parser = ToolCallParser(HERMES)
    assert parser.feed("Hello") == ["Hello"]
    assert parser.feed(", world") == [", world"]
    assert parser.feed(" <b>bold</b> a < b") == [" <b>bold</b> a < b"]
    assert parser.finish() == []


def test_whitespace_is_held_until_it_is_known_not_to_precede_a_call() -> None:
    parser = ToolCallParser(HERMES)
    assert parser.feed("two words ") == ["two words"]
    assert parser.feed("more\n") == [" more"]
    assert parser.finish() == ["\n"]  # the text without calls comes out exactly as written


def test_a_partial_tag_is_held_back_and_released_when_it_is_not_one() -> None:
    parser = ToolCallParser(HERMES)
    assert parser.feed("a <tool") == ["a"]
    assert parser.feed("_ca") == []
    assert parser.feed("ll") == []
    assert parser.feed("ed it") == [" <tool_called it"]
    assert parser.feed(" <tool_") == []
    assert parser.finish() == [" <tool_"]


def test_text_before_a_call_is_shown_before_the_call_completes() -> None:
    parser = ToolCallParser(HERMES)
    assert parser.feed("Let me add.\n<tool_call>\n{") == ["Let me add."]
    assert parser.feed('"name": "demo__add", "arguments": {"a": 2, "b": 3}}\n') == []
    (call,) = parser.feed("</tool_call>")
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments) == ("demo__add", {"a": 2, "b": 3})
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
    assert parser.feed("\n") == []
    assert parser.finish() == []


def test_several_calls_with_text_before_and_after() -> None:
    output = f"Adding, then echoing.\n{CALL_ADD}\n{CALL_ECHO}\nDone: both called."
    items = parse(HERMES, [output])
    assert comparable(items) == [
        "Adding, then echoing.",
        ("demo__add", {"a": 2, "b": 3}),
        ("web__echo", {"text": "a <b>tag</b> and braces {}"}),
        "Done: both called.",
    ]
    ids = [item.id for item in items if isinstance(item, ToolCall)]
    assert len(set(ids)) == 2


def test_a_call_split_at_any_boundary_parses_the_same() -> None:
    """Property-style: however the output is cut into deltas, the result is the same. Every single
    cut, every cut into characters, and 300 random cuttings."""
    output = f"Sure \n{CALL_ADD}\n\n{CALL_ECHO} and <tool_ text after\n"
    expected = comparable(parse(HERMES, [output]))
    assert expected == [
        "Sure",
        ("demo__add", {"a": 2, "b": 3}),
        ("web__echo", {"text": "a <b>tag</b> and braces {}"}),
        "and <tool_ text after\n",
    ]
    for cut in range(len(output) + 1):
        assert comparable(parse(HERMES, [output[:cut], output[cut:]])) == expected, cut
    assert comparable(parse(HERMES, list(output))) == expected
    rng = random.Random(6)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(output)), rng.randint(2, 30)))
        pieces = [output[i:j] for i, j in zip([0, *cuts], [*cuts, len(output)], strict=True)]
        assert comparable(parse(HERMES, pieces)) == expected, cuts


def test_arguments_given_as_a_json_string_are_accepted() -> None:
    output = '<tool_call>\n{"name": "demo__add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}\n</tool_call>'
    assert comparable(parse(HERMES, [output])) == [("demo__add", {"a": 1, "b": 2})]


def test_a_call_without_arguments_has_empty_arguments() -> None:
    assert comparable(parse(HERMES, ['<tool_call>{"name": "demo__now"}</tool_call>'])) == [("demo__now", {})]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param('{"name": "demo__add", "arguments": {broken', "invalid JSON", id="broken-json"),
        pytest.param('{"arguments": {"a": 1}}', 'no "name"', id="no-name"),
        pytest.param('{"name": "", "arguments": {}}', 'no "name"', id="empty-name"),
        pytest.param('["demo__add", {"a": 1}]', "must be a JSON object", id="not-an-object"),
        pytest.param(
            '{"name": "demo__add", "arguments": [1, 2]}', '"arguments" must be a JSON object', id="list"
        ),
        pytest.param(
            '{"name": "demo__add", "arguments": "{nope"}', "arguments string is not JSON", id="bad-str"
        ),
    ],
)
def test_malformed_calls_are_reported_with_the_raw_text(body: str, error: str) -> None:
    output = f"Trying.\n<tool_call>\n{body}\n</tool_call>\nAfter."
    text_before, malformed, text_after = parse(HERMES, [output])
    assert (text_before, text_after) == ("Trying.", "After.")
    assert isinstance(malformed, MalformedToolCall)
    assert malformed.raw == f"<tool_call>\n{body}\n</tool_call>"
    assert error in malformed.error


def test_a_malformed_call_does_not_stop_the_next_one() -> None:
    output = f'<tool_call>{{"name": "x", "arguments": {{broken</tool_call>\n{CALL_ADD}'
    malformed, call = parse(HERMES, [output])
    assert isinstance(malformed, MalformedToolCall)
    assert isinstance(call, ToolCall) and call.name == "demo__add"


def test_an_unterminated_call_is_malformed_at_finish() -> None:
    parser = ToolCallParser(HERMES)
    assert parser.feed('Calling.\n<tool_call>\n{"name": "demo__add", "arguments": {"a": 2') == ["Calling."]
    (malformed,) = parser.finish()
    assert isinstance(malformed, MalformedToolCall)
    assert malformed.raw == '<tool_call>\n{"name": "demo__add", "arguments": {"a": 2'
    assert "unterminated" in malformed.error


# --- parsing llama3-json output ------------------------------------------------------------------------


def test_llama3_text_streams_through_at_once() -> None:
    parser = ToolCallParser(LLAMA3)
    assert parser.feed("  ") == []  # whitespace alone decides nothing
    assert parser.feed("The answer") == ["  The answer"]
    assert parser.feed(" is {4}.") == [" is {4}."]
    assert parser.finish() == []


def test_llama3_text_starting_with_a_tag_that_is_not_python_tag_is_text() -> None:
    parser = ToolCallParser(LLAMA3)
    assert parser.feed("<|pyth") == []
    assert parser.feed("on|> is not it") == ["<|python|> is not it"]
    assert parser.finish() == []


def test_llama3_a_call_is_buffered_to_the_end() -> None:
    parser = ToolCallParser(LLAMA3)
    assert parser.feed(' {"name": "demo__add", ') == []
    assert parser.feed('"parameters": {"a": 2, "b": 3}}') == []
    (call,) = parser.finish()
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments) == ("demo__add", {"a": 2, "b": 3})
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)


@pytest.mark.parametrize("cut", range(1, len(PYTHON_TAG) + 3))
def test_llama3_python_tag_prefix_split_anywhere(cut: int) -> None:
    output = f'{PYTHON_TAG}{{"name": "demo__add", "parameters": {{"a": 1, "b": 1}}}}'
    assert comparable(parse(LLAMA3, [output[:cut], output[cut:]])) == [("demo__add", {"a": 1, "b": 1})]


def test_llama3_several_calls_separated_by_semicolons() -> None:
    output = (
        '{"name": "demo__add", "parameters": {"a": 1, "b": 2}}; '
        '{"name": "web__echo", "arguments": "{\\"text\\": \\"hi\\"}"} ;\n'
        '{"name": "demo__now"};'
    )
    assert comparable(parse(LLAMA3, list(output))) == [
        ("demo__add", {"a": 1, "b": 2}),
        ("web__echo", {"text": "hi"}),
        ("demo__now", {}),
    ]


def test_llama3_one_bad_call_among_good_ones() -> None:
    output = '{"name": "demo__add", "parameters": {"a": 1}}; {"parameters": {}}'
    call, malformed = parse(LLAMA3, [output])
    assert isinstance(call, ToolCall)
    assert isinstance(malformed, MalformedToolCall)
    assert malformed.raw == '{"parameters": {}}' and 'no "name"' in malformed.error


@pytest.mark.parametrize(
    ("output", "error"),
    [
        pytest.param('{"name": "demo__add", "parameters": {broken', "invalid JSON", id="broken-json"),
        pytest.param('{"name": "demo__add", "parameters": {}} and some words', "text after", id="trailing"),
        pytest.param(f"{PYTHON_TAG}brave_search.call(query='x')", "invalid JSON", id="python-call"),
        pytest.param(PYTHON_TAG, "no JSON", id="bare-tag"),
        # An answer that starts with `{` is taken for a call (as vLLM's llama3_json parser does): a
        # model answering in JSON gets a MalformedToolCall whose raw text is the whole answer.
        pytest.param('{"temperature": 21, "unit": "C"}', 'no "name"', id="json-answer-not-a-call"),
        pytest.param("{4} is a set", "invalid JSON", id="text-starting-with-a-brace"),
    ],
)
def test_llama3_malformed_calls(output: str, error: str) -> None:
    (malformed,) = parse(LLAMA3, [output])
    assert isinstance(malformed, MalformedToolCall)
    assert error in malformed.error
    assert malformed.raw == output  # the whole answer, for a caller that shows it as text


def test_llama3_an_unterminated_call_is_malformed() -> None:
    (malformed,) = parse(LLAMA3, list('{"name": "demo__add", "parameters": {"a": 1'))
    assert isinstance(malformed, MalformedToolCall)
    assert malformed.raw == '{"name": "demo__add", "parameters": {"a": 1'


def test_parsers_are_reusable_after_finish() -> None:
    for fmt, call in ((HERMES, CALL_ADD), (LLAMA3, '{"name": "demo__add", "parameters": {"a": 2, "b": 3}}')):
        parser = ToolCallParser(fmt)
        for _ in range(2):
            items = parser.feed(call) + parser.finish()
            assert comparable(items) == [("demo__add", {"a": 2, "b": 3})]
