"""The tools of one answer: the MCP toolbox's, the ChatModels the model may delegate to
(specialists as tools, spec.tools.models) and kubechat's own (spec.tools.builtin), run in process.

A specialist call is a stateless completion of the specialist on the call's `prompt`, through the
same chat service; its answer is the tool result. Delegation is bounded: the supervisor's
spec.tools.maxDepth says how many levels below it may still use tools, so a chain of models
calling each other ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from kubechat.tools.types import Toolbox, ToolResult, ToolSpec

logger = logging.getLogger(__name__)

PROMPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"prompt": {"type": "string", "description": "The complete task or question for it."}},
    "required": ["prompt"],
}
SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "knowledge_base": {"type": "string", "description": "Name of a knowledge base."},
        "query": {"type": "string", "description": "What to look for."},
        "k": {"type": "integer", "minimum": 1, "maximum": 20, "description": "Passages to return (5)."},
    },
    "required": ["knowledge_base", "query"],
}
DESCRIBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "image_id": {"type": "string", "description": "Id of an image the user uploaded."},
        "question": {"type": "string", "description": "What to find out about it."},
    },
    "required": ["image_id"],
}

Run = Callable[[dict[str, Any]], Awaitable[ToolResult]]


@dataclass(frozen=True)
class NativeTool:
    """A tool kubechat runs itself; `timeout_s` replaces the MCP tools' default when set."""

    spec: ToolSpec
    run: Run
    timeout_s: float | None = None


class TurnToolbox:
    """A Toolbox for one answer: native tools by name first, the MCP toolbox's for the rest."""

    def __init__(self, mcp: Toolbox | None, native: Sequence[NativeTool]) -> None:
        self.mcp = mcp
        self.native = {tool.spec.name: tool for tool in native}

    def tools(self, allow: Sequence[str] = ("*",)) -> list[ToolSpec]:
        mcp = self.mcp.tools(allow) if self.mcp is not None else []
        return [*(t.spec for t in self.native.values()), *(t for t in mcp if t.name not in self.native)]

    async def call(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        tool = self.native.get(name)
        if tool is None:
            if self.mcp is None:
                return ToolResult(False, f"tool {name} is not available", "unknown_tool")
            return await self.mcp.call(name, arguments, timeout_s=timeout_s)
        limit = tool.timeout_s or timeout_s
        try:
            return await asyncio.wait_for(tool.run(arguments), limit)
        except TimeoutError:
            return ToolResult(False, f"tool {name} did not answer within {limit:g}s", "tool_timeout")
        except Exception as exc:  # a native tool's bug is the tool's failure, not the answer's
            logger.error("native tool %s failed", name, exc_info=exc)
            return ToolResult(False, f"tool {name} failed", "tool_error")


def allowed(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def string_argument(arguments: dict[str, Any], name: str, default: str | None = None) -> str:
    """A string argument of a call, or ValueError naming what is missing."""
    value = arguments.get(name, default)
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise ValueError(f"argument {name!r} must be a non-empty string")
    return value
