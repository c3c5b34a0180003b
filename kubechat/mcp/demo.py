"""The `demo` MCP server: a few harmless tools to try tool calling with, over stdio.

`make serve` configures it (examples/mcp/servers.yaml), so the README's
`call demo__add {"a": 2, "b": 3}` works on a fresh clone. Run by hand:

    python -m kubechat.mcp.demo        # speaks MCP on stdin/stdout

It is a plain MCP server built with the official SDK's MCPServer, and nothing in kubechat
imports it: a template for your own.
"""

from __future__ import annotations

import datetime as dt

from mcp.server.mcpserver import MCPServer

server = MCPServer(
    "kubechat-demo",
    instructions="Arithmetic and the time: small tools for trying kubechat's tool calling.",
    log_level="WARNING",
)


@server.tool()
def add(a: int | float, b: int | float) -> int | float:
    """Add two numbers."""
    return a + b


@server.tool()
def multiply(a: int | float, b: int | float) -> int | float:
    """Multiply two numbers."""
    return a * b


@server.tool()
def utc_now() -> str:
    """The current date and time in UTC, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def main() -> None:
    server.run("stdio")


if __name__ == "__main__":
    main()
