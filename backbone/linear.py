"""nn.Linear with a faster single-token path for CPU decoding.

Decoding one token multiplies a single row by every weight matrix: a matrix-vector product bound
by how fast the weights stream from memory. On the CPU, BLAS runs that on one core and reads a
row-major [out, in] weight at roughly half the speed of a column-major one. `to_decode_layout`
stores the weight column-major (the same values, strides swapped); a single-row input then runs
as one batched product over two column halves of the weight — both cores, no copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def column_halves(weight: torch.Tensor) -> torch.Tensor | None:
    """The two column halves of a column-major weight as one [2, in, out/2] strided view of
    weightᵀ (no copy), or None when the weight is not column-major or `out` is odd."""
    out_f, in_f = weight.shape
    if out_f % 2 or weight.stride() != (1, out_f):
        return None
    return weight.t().as_strided((2, in_f, out_f // 2), (out_f // 2, out_f, 1))


class Linear(nn.Linear):
    """nn.Linear (no bias in RWKV) whose single-row CPU products use both cores when the weight
    is stored column-major. Identical results to nn.Linear up to float rounding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., in]
        if (x.numel() == x.shape[-1] and x.device.type == "cpu" and self.bias is None
                and not torch.is_grad_enabled()):
            halves = column_halves(self.weight)  # [2, in, out/2]
            if halves is not None:
                out_f = self.weight.shape[0]
                y = torch.bmm(x.reshape(1, 1, -1).expand(2, 1, -1).to(halves.dtype), halves)  # [2, 1, out/2]
                return y.view(*x.shape[:-1], out_f)
        return F.linear(x, self.weight, self.bias)


@torch.no_grad()
def to_decode_layout(model: nn.Module) -> nn.Module:
    """Store the weight of every `Linear` in `model` column-major, in place (values unchanged).

    Speeds up CPU decoding (one token at a time) ~1.5-2×; prefill GEMMs run at the same speed.
    For inference: training works too, but gradients come back row-major. Returns `model`.
    """
    for module in model.modules():
        if isinstance(module, Linear):
            module.weight.data = module.weight.data.t().contiguous().t()
    return model
