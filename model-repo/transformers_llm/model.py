"""Triton python-backend chat model: a Hugging Face causal LM behind the TensorRT-LLM contract."""

from kubechat.engines.generation import CausalLmGenerator, TextGenerator
from kubechat.engines.python_backend import StreamingChatModel


class TritonPythonModel(StreamingChatModel):
    max_active = 1  # one generation at a time: a CPU has no room for more

    def create_generator(self, params: dict[str, str]) -> TextGenerator:
        return CausalLmGenerator(
            params["checkpoint_dir"],
            params.get("checkpoint_file", ""),
            params["tokenizer_dir"],
            int(params["max_input_tokens"]),
        )
