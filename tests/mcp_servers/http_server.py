"""An MCP server over streamable HTTP, served by uvicorn in its own process.

python -m tests.mcp_servers.http_server PORT   (from the repository root)
"""

from __future__ import annotations

import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

from tests.mcp_servers.tools import add_common_tools

server = MCPServer("kubechat-test-http", log_level="WARNING")
add_common_tools(server)


@server.tool()
def whoami(ctx: Context) -> str:
    """The Authorization header of this request (the client's headers_from_env)."""
    headers = ctx.headers or {}
    return headers.get("authorization", "<none>")


if __name__ == "__main__":
    app = server.streamable_http_app(streamable_http_path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
