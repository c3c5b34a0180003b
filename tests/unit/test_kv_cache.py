"""GrowingLayer keeps what transformers' DynamicLayer keeps, written in place."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from kubechat.engines import kv_cache
from kubechat.engines.kv_cache import GrowingLayer


def test_updates_past_the_spare_room_keep_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_cache, "SPARE_TOKENS", 2)  # a new buffer every few tokens
    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    growing, reference = GrowingLayer(keys, values), DynamicLayer()  # type: ignore[no-untyped-call]
    reference.update(keys, values)
    for size in (1, 1, 3, 1, 7, 1):
        new_keys, new_values = torch.randn(3, 2, size, 4), torch.randn(3, 2, size, 4)
        got = growing.update(new_keys, new_values)
        expected = reference.update(new_keys, new_values)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert growing.get_seq_length() == reference.get_seq_length() == 19


def test_assign_replaces_the_rows() -> None:
    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    layer = GrowingLayer(keys, values)
    layer.assign(keys[[0, 2], :, 1:], values[[0, 2], :, 1:])
    assert layer.keys is not None and layer.values is not None
    assert torch.equal(layer.keys, keys[[0, 2], :, 1:]) and torch.equal(layer.values, values[[0, 2], :, 1:])
    assert layer.get_seq_length() == 4
