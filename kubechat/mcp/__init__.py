"""MCP: kubechat as a client of configured MCP servers (their tools) and as an MCP server."""
