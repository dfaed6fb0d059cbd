"""The public WKV operators and the one place that picks their implementation.

``wkv`` (a sequence) runs one of `WKV_IMPLS`, chosen by `choose_wkv_impl` from the inputs;
``wkv_step`` is the single-token decode op. Laid out as flash-linear-attention lays out an op
(``ops/<op>/{chunk,fused_recurrent,naive}.py`` under one public entry), one module each:

    reference  wkv_reference.wkv_reference  plain loop over time in fp32/fp64 (tests, benchmarks)
    chunked    wkv_chunked.wkv_chunked      parallel within chunks (training, prefill; any device)
    step       wkv_recurrent.wkv_recurrent  the decode step per token (decoding one token)
    cuda       wkv_cuda.wkv_cuda            the CUDA kernels (CUDA tensors they cover)

All take the same arguments and share one contract, checked by `check_wkv_inputs`
(`rwkv_mm.kernels.contract`, re-exported here): r, k, v, w [B, T, H, N] with ``w`` the *log*
decay (<= 0, may be a broadcast view), u [H, N], the state [B, H, N, N] fp32 with the key index
first; y comes back in ``r``'s dtype, the state in fp32 (fp64 when an input is fp64). Per head:

    y_t = r_t (S + diag(u) k_t^T v_t)
    S  <- diag(exp(w_t)) S + k_t^T v_t

The non-causal `wkv_bidirectional` is two ``wkv`` calls, so the same rule picks its scans.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch

from . import wkv_cuda as _cuda
from .contract import WkvInputError, check_wkv_inputs, compute_dtype
from .wkv_chunked import wkv_chunked
from .wkv_recurrent import wkv_recurrent, wkv_step
from .wkv_reference import wkv_reference

__all__ = [
    "WKV_IMPLS",
    "WkvInputError",
    "check_wkv_inputs",
    "choose_wkv_impl",
    "compute_dtype",
    "wkv",
    "wkv_cuda_or_fallback",
    "wkv_step",
]

WkvFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]

#: Every implementation of ``wkv``, by the name `choose_wkv_impl` returns (same signature).
WKV_IMPLS: dict[str, WkvFn] = {
    "reference": wkv_reference,
    "chunked": wkv_chunked,
    "step": wkv_recurrent,
    "cuda": _cuda.wkv_cuda,
}

_failed_builds: dict[int, str] = {}  # head size -> why its CUDA build failed (warned once)


def _kernels_built(head_size: int) -> bool:
    """Whether the CUDA kernels for this head size are built (building them on first use).

    A failed build is warned about once and remembered: later calls return False at once.
    """
    if head_size in _failed_builds:
        return False
    try:
        _cuda.build(head_size)  # cached after the first call
    except _cuda.WkvBuildError as e:
        _failed_builds[head_size] = str(e)
        warnings.warn(f"WKV CUDA kernels unavailable, using the chunked PyTorch form: {e}", RuntimeWarning, stacklevel=5)
        return False
    return True


def choose_wkv_impl(device: torch.device | str, dtypes: Iterable[torch.dtype], seq_len: int, head_size: int) -> str:
    """The name in `WKV_IMPLS` that ``wkv`` runs for inputs like these.

    Rules, in order:
      1. ``seq_len == 1`` (a decode step, with or without a state): "step".
      2. On a CUDA device, when the kernels cover the inputs (`wkv_cuda.kernels_cover`: r, k, v, w
         fp32 / fp16 / bf16, head size in `wkv_cuda.HEAD_SIZES`, seq_len > 0) and are built (built
         here on first use; a failed build warns once, then counts as unavailable): "cuda".
      3. Otherwise (any CPU input, fp64, other head sizes, no kernels): "chunked".
    "reference" is never chosen: it is the slow truth the others are tested against.

    Args:
        device: where the inputs are.
        dtypes: the dtypes of r, k, v and w.
        seq_len: T.
        head_size: N.
    """
    if seq_len == 1:
        return "step"
    if torch.device(device).type == "cuda" and _cuda.kernels_cover(dtypes, head_size, seq_len) and _kernels_built(head_size):
        return "cuda"
    return "chunked"


def _dispatch(
    device: torch.device | str,
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the contract, then run the implementation chosen for inputs on ``device``."""
    check_wkv_inputs(r, k, v, w, u, state)
    name = choose_wkv_impl(device, (r.dtype, k.dtype, v.dtype, w.dtype), r.shape[1], r.shape[-1])
    return WKV_IMPLS[name](r, k, v, w, u, state)


def wkv(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV over a sequence with the implementation `choose_wkv_impl` picks for these inputs.

    Args:
        r, k, v, w: [B, T, H, N]; ``w`` is the log decay (<= 0).
        u: [H, N] bonus for the current token.
        state: optional [B, H, N, N] fp32 initial state (key index first); None means zeros.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype, state_out [B, H, N, N] fp32.

    Raises:
        WkvInputError: when an input breaks the contract (the message names the argument).
    """
    return _dispatch(r.device, r, k, v, w, u, state)


def wkv_cuda_or_fallback(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``wkv`` as it runs for tensors on a CUDA device: the same rule with the device taken as CUDA
    (the kernels where they cover the inputs and build, else the chunked form). Same contract."""
    return _dispatch("cuda", r, k, v, w, u, state)


def _cuda_impl() -> WkvFn | None:
    """What ``wkv`` runs for CUDA tensors (`wkv_cuda_or_fallback`); None with a CPU-only torch."""
    return None if torch.version.cuda is None else wkv_cuda_or_fallback
