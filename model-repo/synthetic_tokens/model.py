"""Triton python-backend synthetic token model: measures gateway overhead in benchmarks."""

from kubechat.engines.generation import SyntheticGenerator, TextGenerator
from kubechat.engines.python_backend import StreamingChatModel


class TritonPythonModel(StreamingChatModel):
    workers = 256  # every stream in its own thread, like an in-flight batching engine

    def create_generator(self, params: dict[str, str]) -> TextGenerator:
        return SyntheticGenerator(float(params.get("token_delay_ms", "0")))
