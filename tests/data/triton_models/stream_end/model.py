"""A decoupled test model that ends every stream as TensorRT-LLM's models do: with an empty
final response (no tensors, only the final flag), and that holds its one instance while it
answers, so that Triton's bounded queue fills (tests/integration/test_stream_endings.py).

Prompt `hold`: one delta, then the instance is held for the `hold_ms` parameter. Any other
prompt: its words streamed back one delta each.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _text(text: str) -> Any:
    data = np.array([[text.encode("utf-8")]], dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", data)])


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = json.loads(args["model_config"]).get("parameters", {})
        self.hold_s = float(params.get("hold_ms", {}).get("string_value", "0")) / 1000

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            words = prompt.decode("utf-8").split()
            if words == ["hold"]:
                sender.send(_text("held"))
                time.sleep(self.hold_s)
            else:
                for word in words:
                    sender.send(_text(word + " "))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
