"""The WKV-7 (Goose) CUDA kernels (``wkv7_cuda.cu``): lazy build, autograd Function and entry point.

``wkv7_cuda(r, w, k, v, a, b, state)`` has the contract of `rwkv_mm.kernels.wkv.wkv7` (r, w, k,
v, a, b [B, T, H, N] with ``w`` the log decay, state [B, H, N, N] fp32 value-major) for CUDA
tensors with head size N in `HEAD_SIZES` and fp32 / fp16 / bf16 inputs (w may be fp32 while the
others are 16-bit); all math and the state are fp32. Gradients flow to every input and the
initial state, and a gradient of the final state is accepted, so a long sequence can be trained
in segments. Operands may be any strided views with unit channel stride (e.g. slices of a fused
projection).

Built like the WKV kernels (`rwkv_mm.kernels.wkv_cuda.load_extension`: torch's cpp_extension,
one library per head size, only in a folder no other user can write; `WkvBuildError` names what
is missing). This module only runs the kernels; choosing them, or the chunked form when they
don't cover the inputs or can't be built, is the dispatcher's job (`choose_wkv_impl`, family
"wkv7").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .contract import check_wkv7_inputs, compute_dtype, empty_sequence_result
from .kernel_args import KERNEL_DTYPES, channels_dense, kernel_dtype, upstream_grads
from .wkv_cuda import HEAD_SIZES, WkvBuildError, kernels_cover, load_extension

__all__ = ["HEAD_SIZES", "KERNEL_DTYPES", "SOURCES7", "WkvBuildError", "build7", "kernels_cover", "wkv7_cuda"]

_WHAT = "the WKV-7 CUDA kernels"
#: Sources, relative to the package folder (headers are found through the include path).
SOURCES7 = ("wkv7_cuda.cpp", "wkv7_cuda.cu")


def build7(
    head_size: int = 64,
    *,
    arch: Sequence[str] | None = None,
    fast: bool = False,
    defines: Sequence[str] = (),
    build_directory: str | os.PathLike[str] | None = None,
    verbose: bool = False,
) -> Any:
    """Compile (or load from torch's cache) the WKV-7 extension for one head size.

    Arguments as `rwkv_mm.kernels.wkv_cuda.build` (``defines`` e.g. ``("WKV7_CHUNK=64",)``, the
    backward's checkpoint interval in wkv7_cuda.cu). Returns the ops namespace
    ``torch.ops.rwkv_mm_wkv7_n<N>...``: ``forward``, ``backward``, ``head_size`` (schemas in
    wkv7_cuda.cpp).

    Raises:
        ValueError: head_size is not supported.
        WkvBuildError: a CPU-only torch, no CUDA toolkit, no ninja, or a compile error.
    """
    return load_extension("rwkv_mm_wkv7", SOURCES7, HEAD_SIZES, head_size, _WHAT, arch=arch,
                          fast=fast, defines=defines, build_directory=build_directory, verbose=verbose)


class Wkv7Function(torch.autograd.Function):
    """WKV-7 through kernel ops (``forward``/``backward`` as in wkv7_cuda.cpp; the backward's
    d(initial state) is an empty tensor when there is no initial state).

    Inputs are prepared by `_apply7`: r, k, v, a, b of one kernel dtype, w of that dtype or fp32,
    unit channel stride; the state fp32 contiguous.
    """

    @staticmethod
    def forward(ctx: Any, r, w, k, v, a, b, state, ext):  # type: ignore[override]
        y, s_out = ext.forward(r, w, k, v, a, b, state)  # [B, T, H, N], [B, H, N, N]
        ctx.ext = ext
        ctx.has_state = state is not None
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(r, w, k, v, a, b, state)
        return y, s_out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor | None, ds_out: torch.Tensor | None):  # type: ignore[override]
        r, w, k, v, a, b, state = ctx.saved_tensors
        dy, ds_out = upstream_grads(dy, ds_out, r)
        dr, dw, dk, dv, da, db, ds0 = ctx.ext.backward(r, w, k, v, a, b, state, dy, ds_out)
        return dr, dw, dk, dv, da, db, (ds0 if ctx.has_state else None), None


def _apply7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
    ext: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cast / restride the inputs for the kernels (differentiably) and run `Wkv7Function`."""
    dt = kernel_dtype(_WHAT, r, k, v, a, b)
    rr, kk, vv, aa, bb = (channels_dense(x, dt) for x in (r, k, v, a, b))  # [B, T, H, N]
    ww = channels_dense(w, w.dtype if w.dtype in (dt, torch.float32) else torch.float32)
    ss = None if state is None else state.float().contiguous()  # [B, H, N, N]
    y, s_out = Wkv7Function.apply(rr, ww, kk, vv, aa, bb, ss, ext)
    return y.to(r.dtype), s_out


def wkv7_cuda(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV-7 with the CUDA kernels (building them on first use).

    Args:
        r, w, k, v, a, b: [B, T, H, N] CUDA tensors, fp32 / fp16 / bf16, N in `HEAD_SIZES`; ``w`` is
            the log decay (<= 0).
        state: optional [B, H, N, N] initial state (value index first); None means zeros.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype, state_out [B, H, N, N] fp32.

    Raises:
        WkvInputError: an input breaks the contract (`rwkv_mm.kernels.contract`).
        ValueError: a device, dtype or head size the kernels don't take.
        WkvBuildError: the extension cannot be built here.
    """
    check_wkv7_inputs(r, w, k, v, a, b, state)
    tensors = [x for x in (r, w, k, v, a, b, state) if x is not None]
    if not all(x.is_cuda and x.device == r.device for x in tensors):
        raise ValueError("wkv7_cuda needs all tensors on one CUDA device")
    kernel_dtype(_WHAT, r, k, v, a, b)
    if r.shape[1] == 0:
        return empty_sequence_result(r, state, compute_dtype(r, w, k, v, a, b, state))
    ext = build7(r.shape[-1])
    with torch.cuda.device(r.device):
        return _apply7(r, w, k, v, a, b, state, ext)
