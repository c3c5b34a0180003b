"""An MCP server over stdio, run as a child process by the client under test.

python -m tests.mcp_servers.stdio_server   (from the repository root)
"""

from __future__ import annotations

import os
import subprocess
import sys

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
def helper() -> int:
    """Start a helper process in this server's process group, as `npx` and `uvx` start the real
    server, and return its id: it outlives this server unless the client reaps what is left."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    return subprocess.Popen(sleeper, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).pid


@server.tool()
def crash() -> str:
    """Kill this process at once, mid-call."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
