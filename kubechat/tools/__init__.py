"""Tool calling: the tools offered to models (from MCP servers) and the calls models make."""
