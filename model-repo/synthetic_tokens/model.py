"""Triton python-backend synthetic token model: measures gateway overhead in benchmarks."""

from kubechat.engines.generation import SyntheticGenerator, TextGenerator
from kubechat.engines.python_backend import StreamingChatModel


class TritonPythonModel(StreamingChatModel):
    max_active = 256  # every stream advances each step, like an in-flight batching engine

    def create_generator(self, params: dict[str, str]) -> TextGenerator:
        self.step_delay_s = float(params.get("token_delay_ms", "0")) / 1000.0
        return SyntheticGenerator()
