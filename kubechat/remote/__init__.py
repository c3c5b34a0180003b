"""Models served elsewhere: the OpenAI-compatible endpoint adapter, and the router that sends each
model either to its Triton or to its remote endpoint (docs/providers.md)."""
