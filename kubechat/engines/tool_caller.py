"""A deterministic tool-calling model, for tests and development (backend `tool-caller`).

Small chat models call tools unreliably (SmolLM2-135M hardly ever does), so the tool loop is
tested with this model instead: it reads the ChatML prompt kubechat builds, finds the tools
offered in it (in the format the ChatModel declares, spec.tools.format) and answers by rules:

1. The conversation ends with tool results (a `<tool_response>` user turn for hermes, an
   `ipython` turn for llama3-json; several such turns in a row count as one): it answers
   `Tool results: <name>: <content>; <name>: <content>` quoting every result, in order.
2. The last user turn asks `call <tool> {json object}` (several such clauses: several calls in
   one answer; `call <tool>` alone calls an offered tool with no arguments):
   - a clause naming a tool that was not offered: `Tool <name> is not available.` (one
     sentence per such tool) and no call at all;
   - otherwise the calls, written as the format writes them. `call <tool> malformed` (or a
     `{` that does not parse) writes a syntactically broken call in its place, offered or not.
3. Anything else: `No tool needed: <the first eight words of the last user turn>`.

The answer streams in small deltas (1 to 6 characters, cycling) so that the incremental tool-call
parser meets calls cut at every kind of boundary; each delta counts as one token of max_tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubechat.core.resources import ToolCallFormat
from kubechat.engines.generation import GenerationRequest, stop_filtered
from kubechat.tools.formats import (
    LLAMA3_TOOLS_PREAMBLE,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    TOOL_RESPONSE_CLOSE,
    TOOL_RESPONSE_OPEN,
    TOOLS_CLOSE,
    TOOLS_OPEN,
    assistant_tool_call_text,
)
from kubechat.tools.types import ToolCall

# The sizes of successive deltas, in characters.
DELTA_SIZES = (1, 2, 3, 4, 5, 6)
QUESTION_WORDS = 8

_TURN = re.compile(r"<\|im_start\|>([^\n]*)\n(.*?)(?:<\|im_end\|>\n?|\Z)", re.DOTALL)
_CLAUSE = re.compile(r"(?i:\bcall)\s+([A-Za-z0-9_-]+)")
_MALFORMED = re.compile(r"\s*malformed\b", re.IGNORECASE)
_TOOL_LIST = re.compile(f"^{re.escape(TOOLS_OPEN)}$(.*?)^{re.escape(TOOLS_CLOSE)}$", re.DOTALL | re.MULTILINE)
_RESPONSE = re.compile(
    re.escape(TOOL_RESPONSE_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_RESPONSE_CLOSE), re.DOTALL
)


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class CallRequest:
    """One `call <tool> ...` clause of the user's message."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    malformed: bool = False


def chatml_turns(prompt: str) -> list[Turn]:
    """The turns of a ChatML prompt, without the empty assistant turn it ends with.

    A prompt that is not ChatML is one user turn.
    """
    turns = [Turn(m.group(1).strip(), m.group(2)) for m in _TURN.finditer(prompt)]
    if not turns:
        return [Turn("user", prompt)]
    if turns[-1].role == "assistant" and not turns[-1].content:
        turns.pop()
    return turns


def offered_tools(fmt: ToolCallFormat, turns: Sequence[Turn]) -> list[str]:
    """Names of the tools the prompt offers, read back from the format's tool list."""
    for turn in turns:
        if turn.role == "assistant":
            continue
        names = _hermes_tools(turn.content) if fmt is ToolCallFormat.HERMES else _llama3_tools(turn.content)
        if names:
            return names
    return []


def _name_of(tool: object) -> str | None:
    if not isinstance(tool, dict):
        return None
    function = tool.get("function", tool)
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def _hermes_tools(text: str) -> list[str]:
    listing = _TOOL_LIST.search(text)  # the tags on lines of their own, not their mention before
    if listing is None:
        return []
    names = []
    for line in listing.group(1).splitlines():
        try:
            name = _name_of(json.loads(line)) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if name:
            names.append(name)
    return names


def _llama3_tools(text: str) -> list[str]:
    start = text.find(LLAMA3_TOOLS_PREAMBLE)
    if start < 0:
        return []
    decoder = json.JSONDecoder()
    position = start + len(LLAMA3_TOOLS_PREAMBLE)
    names: list[str] = []
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        try:
            tool, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return names
        name = _name_of(tool)
        if name:
            names.append(name)


def tool_results(fmt: ToolCallFormat, turn: Turn) -> list[tuple[str, str]] | None:
    """(tool name, result) of each result a results turn carries; None if it is not one."""
    if fmt is ToolCallFormat.HERMES:
        if turn.role not in ("user", "tool") or not turn.content.lstrip().startswith(TOOL_RESPONSE_OPEN):
            return None
        return [_result(body, "content") for body in _RESPONSE.findall(turn.content)]
    if turn.role not in ("ipython", "tool"):
        return None
    return [_result(line, "output") for line in turn.content.splitlines() if line.strip()]


def _result(text: str, key: str) -> tuple[str, str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return "tool", text
    if not isinstance(value, dict):
        return "tool", text
    content = value.get(key, "")
    return str(value.get("name", "tool")), content if isinstance(content, str) else json.dumps(content)


def call_requests(text: str, offered: Sequence[str]) -> list[CallRequest]:
    """The `call <tool> ...` clauses of a message, in order.

    A clause is `call <name>` followed by `malformed`, by a JSON object, or (for an offered tool
    only, so that "call me later" is no clause) by nothing.
    """
    decoder = json.JSONDecoder()
    found: list[CallRequest] = []
    position = 0
    while (match := _CLAUSE.search(text, position)) is not None:
        name, position = match.group(1), match.end()
        if (malformed := _MALFORMED.match(text, position)) is not None:
            found.append(CallRequest(name, malformed=True))
            position = malformed.end()
            continue
        start = position
        while start < len(text) and text[start].isspace():
            start += 1
        if start < len(text) and text[start] == "{":
            try:
                arguments, position = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                found.append(CallRequest(name, malformed=True))
                continue
            if isinstance(arguments, dict):
                found.append(CallRequest(name, arguments))
            else:
                found.append(CallRequest(name, malformed=True))
        elif name in offered:
            found.append(CallRequest(name))
    return found


def _broken_call(fmt: ToolCallFormat, name: str) -> str:
    """A call cut off inside its arguments (what a model that lost its way writes)."""
    quoted = json.dumps(name)
    if fmt is ToolCallFormat.HERMES:
        return f'{TOOL_CALL_OPEN}\n{{"name": {quoted}, "arguments": {{broken\n{TOOL_CALL_CLOSE}'
    return f'{{"name": {quoted}, "parameters": {{broken'


def _written_calls(fmt: ToolCallFormat, requests: Sequence[CallRequest]) -> str:
    pieces = [
        _broken_call(fmt, r.name)
        if r.malformed
        else assistant_tool_call_text(fmt, [ToolCall("", r.name, r.arguments)])
        for r in requests
    ]
    return ("\n" if fmt is ToolCallFormat.HERMES else "; ").join(pieces)


def answer(fmt: ToolCallFormat, prompt: str) -> str:
    """The whole answer to a prompt, by the rules in the module docstring."""
    fmt = ToolCallFormat(fmt)
    turns = chatml_turns(prompt)
    results: list[tuple[str, str]] = []
    index = len(turns)
    while index > 0 and (found := tool_results(fmt, turns[index - 1])) is not None:
        results = found + results
        index -= 1
    if index < len(turns):
        return "Tool results: " + "; ".join(f"{name}: {content}" for name, content in results)
    question = next((t.content for t in reversed(turns) if t.role == "user"), "")
    offered = offered_tools(fmt, turns)
    requests = call_requests(question, offered)
    if not requests:
        return "No tool needed: " + " ".join(question.split()[:QUESTION_WORDS])
    missing = list(dict.fromkeys(r.name for r in requests if r.name not in offered and not r.malformed))
    if missing:
        return " ".join(f"Tool {name} is not available." for name in missing)
    return _written_calls(fmt, requests)


def deltas(text: str) -> Iterator[str]:
    """`text` in pieces of DELTA_SIZES characters, cycling."""
    position, step = 0, 0
    while position < len(text):
        size = DELTA_SIZES[step % len(DELTA_SIZES)]
        yield text[position : position + size]
        position, step = position + size, step + 1


class ToolCallerGenerator:
    """The TextGenerator of the `tool-caller` backend: the rule-made answer, streamed."""

    def __init__(self, fmt: ToolCallFormat) -> None:
        self.format = ToolCallFormat(fmt)

    def generate(self, request: GenerationRequest, cancelled: Callable[[], bool]) -> Iterator[str]:
        return stop_filtered(deltas(answer(self.format, request.prompt)), request, cancelled)
