"""Operands and upstream gradients as the WKV CUDA kernels (both families) take them.

Shared by `rwkv_mm.kernels.wkv_cuda` (Eagle/Finch) and `rwkv_mm.kernels.wkv7_cuda` (Goose): the
input dtypes the kernels are written for, the one dtype their operands are cast to, unit channel
stride, and the upstream gradients of y and of the final state in the form their backward reads.
"""

from __future__ import annotations

import torch

__all__ = ["KERNEL_DTYPES", "channels_dense", "kernel_dtype", "upstream_grads"]

#: Input dtypes the kernels take (r, k, v, ... of one of these; w of the same or fp32).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernel_dtype(what: str, *xs: torch.Tensor) -> torch.dtype:
    """The dtype the operands ``xs`` (all but w) are run in: their promoted dtype.

    Raises:
        ValueError: that is not one of `KERNEL_DTYPES` (``what`` names the kernels).
    """
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = torch.promote_types(dt, x.dtype)
    if dt not in KERNEL_DTYPES:
        raise ValueError(f"{what} take float32, float16 or bfloat16 inputs, got {dt}")
    return dt


def channels_dense(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in ``dtype`` with unit channel stride (other strides, even 0, are kept)."""
    x = x.to(dtype)
    return x if x.stride(-1) == 1 else x.contiguous()


def upstream_grads(
    dy: torch.Tensor | None, ds_out: torch.Tensor | None, r: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dy in r's dtype with unit channel stride (zeros when None); ds_out fp32 contiguous (or None)."""
    if dy is None:
        dy = torch.zeros_like(r)
    elif dy.dtype != r.dtype or dy.stride(-1) != 1:
        dy = dy.to(r.dtype).contiguous()
    return dy, None if ds_out is None else ds_out.float().contiguous()
