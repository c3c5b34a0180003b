"""Triton: the tensor contract, the model-repository renderers, model artifacts, the gRPC client."""
