"""An MCP server over stdio, run as a child process by the client under test.

python -m tests.mcp_servers.stdio_server   (from the repository root)
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

from tests.mcp_servers.tools import add_common_tools

server = MCPServer("kubechat-test-stdio", log_level="WARNING")
add_common_tools(server)


@server.tool()
def whoami() -> str:
    """The value of MCP_TEST_TOKEN in this process's environment (given by the client's env_from)."""
    return os.environ.get("MCP_TEST_TOKEN", "<unset>")


@server.tool()
def environment() -> list[str]:
    """The names of this process's environment variables."""
    return sorted(os.environ)


@server.tool()
def pid() -> int:
    """This process's id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Kill this process at once, mid-call."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
