"""The tools both test servers offer, so each transport is tested against the same behaviour."""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def add_common_tools(server: MCPServer) -> None:
    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def fail() -> str:
        """Always fails: the client sees an MCP tool error."""
        raise ToolError("this tool always fails")

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await anyio.sleep(seconds)
        return f"slept {seconds}s"

    @server.tool()
    async def grow(ctx: Context, notify: bool = True) -> str:
        """Add a tool named `grown`; tell the client that the tool list changed if `notify`."""
        if not any(tool.name == "grown" for tool in await server.list_tools()):
            server.add_tool(lambda: "I am new", name="grown", description="Added at run time.")
        if notify:
            await ctx.request_context.session.send_tool_list_changed()
        return "grown"
