"""PackedLinear (the CPU chat engine's linear layers) computes what torch.nn.Linear computes."""

from __future__ import annotations

import pytest
import torch

from kubechat.engines.packed_linear import PackedLinear, pack_linear_layers, packing_available

pytestmark = pytest.mark.skipif(not packing_available(), reason="torch was built without oneDNN")


class Tied(torch.nn.Module):
    """An embedding and an output layer sharing one weight, as SmolLM2's do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.hidden = torch.nn.Linear(16, 24)
        self.back = torch.nn.Linear(24, 16, bias=False)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.back(self.hidden(self.embed(ids))))
        return out


@pytest.mark.parametrize("shape", [(1, 1), (4, 1), (1, 7), (3, 5)])
def test_the_packed_model_computes_what_the_original_does(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = Tied().eval()
    ids = torch.randint(0, 50, shape)
    with torch.inference_mode():
        expected = model(ids)
        assert pack_linear_layers(model) == 3
        assert all(not isinstance(m, torch.nn.Linear) for m in model.modules())
        actual = model(ids)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_a_tied_weight_stays_shared_and_rows_are_the_same_batched_as_alone() -> None:
    model = Tied().eval()
    pack_linear_layers(model)
    assert isinstance(model.head, PackedLinear)
    assert model.head.weight is model.embed.weight
    rows = torch.randn(4, 1, 24)
    with torch.inference_mode():
        together = model.back(rows)  # oneDNN, four rows in one call
        alone = torch.cat([model.back(rows[i : i + 1]) for i in range(4)])  # MKL, one row each
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
