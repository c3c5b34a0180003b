"""Triton python-backend chat model: a Hugging Face causal LM behind the TensorRT-LLM contract."""

import json

from kubechat.engines.generation import CausalLmGenerator, TextGenerator
from kubechat.engines.python_backend import StreamingChatModel


class TritonPythonModel(StreamingChatModel):
    def initialize(self, args: dict[str, str]) -> None:
        # The active requests decode as one batch per step (DecodingBatch): up to the model's
        # `engine.maxBatchSize` at once, the rest wait for a row.
        self.max_active = max(1, int(json.loads(args["model_config"]).get("max_batch_size", 1)))
        super().initialize(args)

    def create_generator(self, params: dict[str, str]) -> TextGenerator:
        return CausalLmGenerator(
            params["checkpoint_dir"],
            params.get("checkpoint_file", ""),
            params["tokenizer_dir"],
            int(params["max_input_tokens"]),
        )
