"""Triton python-backend tool-calling test model: deterministic tool calls in the declared format."""

from kubechat.core.resources import ToolCallFormat
from kubechat.engines.generation import TextGenerator
from kubechat.engines.python_backend import StreamingChatModel
from kubechat.engines.tool_caller import ToolCallerGenerator


class TritonPythonModel(StreamingChatModel):
    max_active = 64  # answers are computed, not decoded: every stream advances each step

    def create_generator(self, params: dict[str, str]) -> TextGenerator:
        return ToolCallerGenerator(ToolCallFormat(params.get("tool_format", "hermes")))
