"""The shapes shared by the MCP client, the tool-call formats and the chat loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """A tool a model may call. `name` is what the model sees: `<server>__<tool>` for MCP tools
    (OpenAI function names allow only letters, digits, `_` and `-`)."""

    name: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """A call a model asked for; `id` is unique within a turn."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class MalformedToolCall:
    """Model output that announced a tool call but is not a valid one (bad JSON, no name)."""

    raw: str
    error: str


@dataclass(frozen=True)
class ToolResult:
    """What a tool returned: `content` is its text (MCP text content joined); `ok` is false for
    a tool error, a timeout, an unknown or unavailable tool (then `error_code` says which)."""

    ok: bool
    content: str
    error_code: str = ""


class Toolbox(Protocol):
    """Where tools come from and are run (kubechat.mcp.toolbox.McpToolbox)."""

    def tools(self, allow: Sequence[str] = ("*",)) -> list[ToolSpec]:
        """The tools available now whose names match one of the fnmatch patterns `allow`."""
        ...

    async def call(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float | None = None
    ) -> ToolResult:
        """Run one tool; problems are results (ok False, error_code), never exceptions."""
        ...
