"""Linear layers fast for one row and for a few (CPU, float32): the decoding batch's matmuls.

A decoding step multiplies each weight by one row per active request. torch's linear goes to
MKL, whose GEMM for a few rows repacks the weight on every call: four rows cost about twice
one, and batching four streams gained little. oneDNN with the weight packed once ahead (the
path torch.compile takes for CPU linear layers) computes four rows for little more than one,
but has a fixed cost per call that makes one row slower than MKL's matrix-vector product. So
each layer keeps both: one row goes to MKL (the weight stored as [in, out] in memory, which
MKL multiplies faster), several rows to oneDNN. The price is a second copy of the weights.

Measured on the 2-core development machine under load, a whole SmolLM2 decoding step (median
of 5, ms): 1 row: MKL 69, MKL [in, out] 63, oneDNN 103; 4 rows: 141, 109, 98.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any

import torch

# oneDNN picks its packed layout for this many rows; a decoding batch is a few rows.
BATCH_HINT = 4


def packing_available() -> bool:
    available = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(available) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(torch.nn.Module):
    """`torch.nn.Linear`'s forward: one row through MKL, more through a oneDNN-packed copy."""

    def __init__(self, linear: torch.nn.Linear, weight: torch.nn.Parameter) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = weight  # [out, in] to torch, [in, out] in memory
        self.bias = linear.bias
        self.packed: Any = torch.ops.mkldnn._reorder_linear_weight(
            linear.weight.detach().contiguous(), BATCH_HINT
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] == 1:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.detach()
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            rows.contiguous(), self.packed, bias, "none", [], ""
        )
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace every float32 `nn.Linear` of `model` by a PackedLinear; returns how many. A
    weight shared with another module (tied input embeddings) stays shared."""
    if not packing_available():
        return 0
    transposed: dict[int, torch.nn.Parameter] = {}  # original weight -> its [in, out] copy
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child.weight.dtype == torch.float32:
                weight = child.weight.detach()
                transposed[id(child.weight)] = torch.nn.Parameter(
                    weight.t().contiguous().t(), requires_grad=False
                )
                setattr(parent, name, PackedLinear(child, transposed[id(child.weight)]))
                replaced += 1
    for module in model.modules():  # the tied embedding now reads the same [in, out] copy
        if isinstance(module, torch.nn.Embedding) and id(module.weight) in transposed:
            module.weight = transposed[id(module.weight)]
    transposed.clear()
    _return_freed_memory()
    return replaced


def _return_freed_memory() -> None:
    """Give the replaced weights' memory back to the system. glibc keeps freed blocks of a few
    MB on its heap; without this the process kept ~370 MiB it no longer used (SmolLM2: 1,967
    MiB resident after packing, 1,555 MiB with it, 1,038 MiB unpacked)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):  # glibc only
        libc.malloc_trim(0)
