"""Real MCP servers (built with the official SDK) that the MCP client tests talk to."""
