"""Tool-call formats: how tools are offered to a model, how its calls and their results are
written back into the conversation, and how its streamed output is split into text and calls.

A ChatModel names its format in spec.tools.format, the convention its chat template and its
training follow:

`hermes` (Hermes 2 Pro, Qwen2.5 and most ChatML models trained for tools)
    The system prompt lists the tools as JSON lines inside `<tools></tools>`; the model writes
    each call as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, several in one
    answer if it likes, possibly after some text. Results go back in a *user* turn of
    `<tool_response>\\n{"name": ..., "content": ...}\\n</tool_response>` blocks: Qwen2.5's
    template renders `tool` messages as such blocks inside one user turn, and NousResearch's
    Hermes function-calling format puts that JSON in them. A `tool` role would be rendered by
    kubechat's default ChatML template as a turn of its own that no Hermes model was trained
    on; the user role reads the same under both templates.

`llama3-json` (Llama 3.1/3.2 JSON tool calling)
    The tools are listed as indented JSON after "Given the following functions, ...";
    the model answers with a call `{"name": ..., "parameters": {...}}` instead of text
    (optionally after `<|python_tag|>`; several calls separated by `;`). Results go back in an
    `ipython` turn, the role Llama's template gives `tool`/`ipython` messages, one JSON line
    `{"name": ..., "output": ...}` per result (vLLM's tool_chat_template_llama3.1_json.jinja
    writes `{"output": ...}`; the name tells several results apart). kubechat's default
    ChatML template renders it as an `<|im_start|>ipython` turn.

The texts are copied from the models' own chat templates (see the comments below), so a model
sees tools the way it was trained to.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from kubechat.core.resources import ToolCallFormat
from kubechat.tools.types import MalformedToolCall, ToolCall, ToolSpec

__all__ = [
    "LLAMA3_TOOLS_PREAMBLE",
    "PYTHON_TAG",
    "TOOLS_CLOSE",
    "TOOLS_OPEN",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "TOOL_RESPONSE_CLOSE",
    "TOOL_RESPONSE_OPEN",
    "ParsedOutput",
    "ToolCallParser",
    "assistant_tool_call_text",
    "function_json",
    "new_call_id",
    "tool_results_turn",
    "tools_system_prompt",
]

# What the parser yields, in output order: text safe to show now, a complete call, or a broken one.
ParsedOutput = str | ToolCall | MalformedToolCall

TOOLS_OPEN = "<tools>"
TOOLS_CLOSE = "</tools>"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
PYTHON_TAG = "<|python_tag|>"

# Qwen2.5's chat template (tokenizer_config.json of Qwen/Qwen2.5-7B-Instruct on the Hugging Face
# Hub), word for word: the block it appends to the system message when tools are given.
_HERMES_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    f"You are provided with function signatures within {TOOLS_OPEN}{TOOLS_CLOSE} XML tags:\n{TOOLS_OPEN}"
)
_HERMES_TOOLS_TAIL = (
    f"\n{TOOLS_CLOSE}\n\nFor each function call, return a json object with function name and arguments "
    f"within {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} XML tags:\n{TOOL_CALL_OPEN}\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    f"{TOOL_CALL_CLOSE}"
)
# Llama 3.1's chat template (tokenizer_config.json of meta-llama/Llama-3.1-8B-Instruct; Llama
# 3.2's is the same here), word for word, including the missing space in "}.Do": the text that
# introduces custom tools. The template puts it in the first user message (tools_in_user_message);
# kubechat puts it in the system prompt with the rest of the instructions.
LLAMA3_TOOLS_PREAMBLE = (
    "Given the following functions, please respond with a JSON for a function call with its proper "
    "arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its '
    "value}.Do not use variables.\n\n"
)


def function_json(tool: ToolSpec) -> dict[str, Any]:
    """A tool as chat templates receive it (OpenAI's function-tool shape)."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
    }


def tools_system_prompt(fmt: ToolCallFormat, tools: Sequence[ToolSpec]) -> str:
    """The system-prompt text that offers `tools` in the model's format ("" for no tools).

    Meant to follow the model's own system prompt after a blank line.
    """
    if not tools:
        return ""
    if ToolCallFormat(fmt) is ToolCallFormat.HERMES:
        # Qwen's template writes `tool | tojson`: json.dumps with its default separators.
        lines = "".join("\n" + json.dumps(function_json(t), ensure_ascii=False) for t in tools)
        return _HERMES_TOOLS_HEAD + lines + _HERMES_TOOLS_TAIL
    # Llama's template writes `t | tojson(indent=4)`, each followed by a blank line.
    listed = "\n\n".join(json.dumps(function_json(t), indent=4, ensure_ascii=False) for t in tools)
    return LLAMA3_TOOLS_PREAMBLE + listed


def assistant_tool_call_text(fmt: ToolCallFormat, calls: Sequence[ToolCall]) -> str:
    """The calls as the model writes them, for the assistant turn that made them in the history.

    Hermes: one `<tool_call>` block per call, joined by newlines (as Qwen2.5's template renders
    an assistant message's tool_calls; text the model wrote before them goes first, followed by a
    newline). Llama 3: `{"name": ..., "parameters": ...}` per call, joined by "; ".
    """
    if ToolCallFormat(fmt) is ToolCallFormat.HERMES:
        return "\n".join(
            f"{TOOL_CALL_OPEN}\n"
            + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
            + f"\n{TOOL_CALL_CLOSE}"
            for c in calls
        )
    return "; ".join(
        json.dumps({"name": c.name, "parameters": c.arguments}, ensure_ascii=False) for c in calls
    )


def tool_results_turn(fmt: ToolCallFormat, results: Sequence[tuple[ToolCall, str]]) -> tuple[str, str]:
    """(role, content) of the history turn that carries the results of a round's calls, in order.

    The text of each result is used as given: cutting it to spec.tools.maxResultChars is the
    caller's business, as is wording an error.
    """
    if ToolCallFormat(fmt) is ToolCallFormat.HERMES:
        blocks = (
            f"{TOOL_RESPONSE_OPEN}\n"
            + json.dumps({"name": call.name, "content": text}, ensure_ascii=False)
            + f"\n{TOOL_RESPONSE_CLOSE}"
            for call, text in results
        )
        return "user", "\n".join(blocks)
    lines = (json.dumps({"name": call.name, "output": text}, ensure_ascii=False) for call, text in results)
    return "ipython", "\n".join(lines)


def new_call_id() -> str:
    """A fresh tool-call id in OpenAI's shape (`call_` and 24 hex digits)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _call_from_json(value: object, raw: str, argument_keys: tuple[str, ...]) -> ToolCall | MalformedToolCall:
    """A call from its decoded JSON, or why it is not one. Arguments may be a JSON object or a
    string holding one (some models write them so, as OpenAI's API does)."""
    if not isinstance(value, dict):
        return MalformedToolCall(raw, "a tool call must be a JSON object with a name and arguments")
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return MalformedToolCall(raw, 'the tool call has no "name"')
    arguments: object = next((value[k] for k in argument_keys if k in value), None)
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return MalformedToolCall(raw, f"the arguments string is not JSON: {exc.msg}")
    if not isinstance(arguments, dict):
        return MalformedToolCall(raw, f'"{argument_keys[0]}" must be a JSON object')
    return ToolCall(new_call_id(), name.strip(), arguments)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that begins `marker` (and is shorter than it)."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


def _merged(items: Iterable[ParsedOutput]) -> list[ParsedOutput]:
    """Adjacent texts joined; empty texts dropped."""
    out: list[ParsedOutput] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += item
                continue
        out.append(item)
    return out


class _HermesParser:
    """`<tool_call>{json}</tool_call>` blocks anywhere in the output; the rest is text.

    A call ends at the first `</tool_call>` after its start, as in vLLM's hermes parser (a
    `</tool_call>` inside a JSON string of the arguments cuts the call there: malformed).

    Whitespace next to a call (the newlines around and between blocks) is layout, not text: it
    is dropped. So that the result does not depend on how the output was cut into deltas, text
    is held back while it might still turn out to precede a call: trailing whitespace and a
    partial `<tool_call>`. Both are released by the next text or by finish().
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False
        self._after_call = False  # nothing but whitespace since the last call

    def feed(self, delta: str) -> list[ParsedOutput]:
        self._buffer += delta
        out: list[ParsedOutput] = []
        while True:
            if self._in_call:
                end = self._buffer.find(TOOL_CALL_CLOSE)
                if end < 0:
                    return _merged(out)
                body, self._buffer = self._buffer[:end], self._buffer[end + len(TOOL_CALL_CLOSE) :]
                self._in_call, self._after_call = False, True
                out.append(self._call(body))
                continue
            if self._after_call:
                stripped = self._buffer.lstrip()
                if not stripped:
                    self._buffer = ""
                    return _merged(out)
                self._buffer, self._after_call = stripped, False
            start = self._buffer.find(TOOL_CALL_OPEN)
            if start >= 0:
                out.append(self._buffer[:start].rstrip())
                self._buffer = self._buffer[start + len(TOOL_CALL_OPEN) :]
                self._in_call = True
                continue
            keep = len(self._buffer) - _partial_suffix(self._buffer, TOOL_CALL_OPEN)
            while keep > 0 and self._buffer[keep - 1].isspace():
                keep -= 1
            out.append(self._buffer[:keep])
            self._buffer = self._buffer[keep:]
            return _merged(out)

    def finish(self) -> list[ParsedOutput]:
        if self._in_call:
            raw = TOOL_CALL_OPEN + self._buffer
            out: list[ParsedOutput] = [
                MalformedToolCall(raw, "unterminated tool call: the output ended before its closing tag")
            ]
        else:
            out = [self._buffer]
        self._buffer, self._in_call, self._after_call = "", False, False
        return _merged(out)

    @staticmethod
    def _call(body: str) -> ToolCall | MalformedToolCall:
        raw = TOOL_CALL_OPEN + body + TOOL_CALL_CLOSE
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            return MalformedToolCall(raw, f"invalid JSON in a tool call: {exc.msg} (character {exc.pos})")
        return _call_from_json(value, raw, ("arguments", "parameters"))


class _Llama3JsonParser:
    """A whole answer that is a call, or text.

    As vLLM's `llama3_json` parser decides: an answer that starts (after whitespace) with `{` or
    `<|python_tag|>` is a call and is buffered to the end of the stream (calls come out of
    finish()); anything else streams through as text. An answer that starts with `{` but is not
    a valid call (a model answering in JSON) comes out as a MalformedToolCall whose raw text is
    the whole answer, so a caller may still show it.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._mode: Literal["undecided", "text", "call"] = "undecided"

    def feed(self, delta: str) -> list[ParsedOutput]:
        if self._mode == "text":
            return _merged([delta])
        self._buffer += delta
        if self._mode == "call":
            return []
        head = self._buffer.lstrip()
        if not head or (PYTHON_TAG.startswith(head) and head != PYTHON_TAG):
            return []  # only whitespace so far, or perhaps the python tag cut in two
        if head.startswith(("{", PYTHON_TAG)):
            self._mode = "call"
            return []
        self._mode = "text"
        text, self._buffer = self._buffer, ""
        return _merged([text])

    def finish(self) -> list[ParsedOutput]:
        buffer, mode = self._buffer, self._mode
        self._buffer, self._mode = "", "undecided"
        if mode != "call":
            return _merged([buffer])
        return list(self._calls(buffer))

    @staticmethod
    def _calls(raw: str) -> list[ToolCall | MalformedToolCall]:
        text = raw.strip()
        if text.startswith(PYTHON_TAG):
            text = text[len(PYTHON_TAG) :].lstrip()
        decoder = json.JSONDecoder()
        found: list[tuple[object, str]] = []
        position = 0
        while position < len(text):
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                return [
                    MalformedToolCall(raw, f"invalid JSON in a tool call: {exc.msg} (character {exc.pos})")
                ]
            found.append((value, text[position:end]))
            position = _skip_space(text, end)
            if position < len(text):
                if text[position] != ";":
                    return [MalformedToolCall(raw, "text after a tool call (calls are separated by ';')")]
                position = _skip_space(text, position + 1)
        if not found:
            return [MalformedToolCall(raw, "no JSON after the python tag")]
        return [_call_from_json(value, piece, ("parameters", "arguments")) for value, piece in found]


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


class ToolCallParser:
    """Splits a model's streamed output into text and tool calls, incrementally.

    feed() takes each delta and returns, in order, the text that is safe to show now and the
    calls completed so far; finish() returns the rest at the end of the stream (an unterminated
    call is a MalformedToolCall there). Each ToolCall gets a fresh id. One parser per answer.
    """

    def __init__(self, fmt: ToolCallFormat) -> None:
        self.format = ToolCallFormat(fmt)
        self._parser = _HermesParser() if self.format is ToolCallFormat.HERMES else _Llama3JsonParser()

    def feed(self, delta: str) -> list[ParsedOutput]:
        return self._parser.feed(delta)

    def finish(self) -> list[ParsedOutput]:
        return self._parser.finish()
