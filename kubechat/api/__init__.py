"""kubechat's API service: WebSocket and OpenAI-compatible streaming chat over Triton."""
