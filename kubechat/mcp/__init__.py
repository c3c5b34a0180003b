"""MCP servers whose tools models may call: their configuration and the supervised toolbox.

kubechat serving MCP itself is a transport: kubechat.api.mcp_server.
"""
