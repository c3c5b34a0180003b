"""A KV cache layer that grows in place: the decoding batch's cache (kubechat.engines.generation).

transformers' DynamicLayer concatenates every new token's keys and values onto the whole cache:
each step copies all of it. With four rows of 1,000 tokens that copy was a third of a decoding
step (SmolLM2 on the 2-core machine: 46 ms of 140). This layer keeps its tensors in a buffer
with room to spare and writes each step's keys and values into it; `keys` and `values` are views
of the filled part, as transformers reads them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

# Room added when a buffer is (re)allocated: this many tokens, or a quarter of the length.
SPARE_TOKENS = 256


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer's keys and values, [rows, heads, tokens, head size], in a buffer that grows."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.is_initialized = True
        self.device = keys.device
        self.assign(keys, values)

    def assign(self, keys: torch.Tensor, values: torch.Tensor, coming: int = 0) -> None:
        """Replace the contents (rows joined or dropped): a new buffer with room for `coming`
        more tokens and some to spare."""
        length = keys.shape[-2]
        capacity = length + coming + max(SPARE_TOKENS, (length + coming) // 4)
        self._keys = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
        self._values = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._keys[..., :length, :] = keys
        self._values[..., :length, :] = values
        self._length = length
        self.keys, self.values = self._keys[..., :length, :], self._values[..., :length, :]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            filled = self._keys[..., : self._length, :], self._values[..., : self._length, :]
            self.assign(*filled, coming=key_states.shape[-2])
        self._keys[..., self._length : end, :] = key_states
        self._values[..., self._length : end, :] = value_states
        self._length = end
        self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
        return self.keys, self.values
