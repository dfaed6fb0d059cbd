"""The public WKV operators: ``wkv`` for sequences and ``wkv_step`` for one-token decoding.

Contract (shared with `wkv_chunked` and `wkv_reference`): r, k, v, w are [B, T, H, N] (any
float dtype; ``w`` may be a broadcast view), ``w`` is the *log* decay (<= 0, per-step factor
``exp(w)``), u is [H, N], the state is [B, H, N, N] fp32 with the key index first. Per head:

    y_t = r_t (S + diag(u) k_t^T v_t)
    S  <- diag(exp(w_t)) S + k_t^T v_t

Outputs come back in ``r``'s dtype and the state in fp32; all internal math is fp32 (fp64 when
an input is fp64, which only the tests use).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .wkv_chunked import _compute_dtype, check_wkv_args, wkv_chunked

__all__ = ["wkv", "wkv_step"]

WkvFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _cuda_impl() -> WkvFn | None:
    """CUDA kernel for CUDA tensors, with ``wkv``'s signature; None with a CPU-only torch.

    The entry point (`wkv_cuda.wkv_cuda_or_fallback`) builds the kernels on its first call and
    keeps the chunked form for what they don't cover (head sizes other than 32/64/128, fp64), and,
    after one warning, when they cannot be built.
    """
    if torch.version.cuda is None:
        return None
    from .wkv_cuda import wkv_cuda_or_fallback  # imports nothing heavy; builds nothing yet

    return wkv_cuda_or_fallback


def wkv(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV over a sequence with the fastest available implementation.

    Args:
        r, k, v, w: [B, T, H, N]; ``w`` is the log decay (<= 0).
        u: [H, N] bonus for the current token.
        state: optional [B, H, N, N] fp32 initial state (key index first); None means zeros.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype, state_out [B, H, N, N] fp32.

    Raises:
        ValueError: when a shape disagrees with the contract (the message names the argument).
    """
    check_wkv_args(r, k, v, w, u, state)
    if r.is_cuda:
        impl = _cuda_impl()
        if impl is not None:
            return impl(r, k, v, w, u, state)
    return wkv_chunked(r, k, v, w, u, state)


def wkv_step(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent decode step (O(1) in the sequence length).

    Args:
        r, k, v, w: [B, H, N] for a single token; ``w`` is the log decay (<= 0).
        u: [H, N] bonus for the current token.
        state: [B, H, N, N] fp32 state (key index first); None means zeros.

    Returns:
        ``(y, state_out)``: y [B, H, N] in ``r``'s dtype, the new state [B, H, N, N] fp32.

    Raises:
        ValueError: when a shape disagrees with the contract (the message names the argument).
    """
    check_wkv_args(r, k, v, w, u, state, single_step=True)
    dt = _compute_dtype(r, k, v, w, u, state)
    rf, kf, vf, wf = (x.to(dt) for x in (r, k, v, w))  # [B, H, N]
    uf = u.to(dt)  # [H, N]
    bonus = (rf * uf * kf).sum(-1, keepdim=True) * vf  # [B, H, N]
    kv = kf.unsqueeze(-1) * vf.unsqueeze(-2)  # [B, H, N, N]
    if state is None:
        return bonus.to(r.dtype), kv
    s = state.to(dt)
    y = (rf.unsqueeze(-2) @ s).squeeze(-2) + bonus  # [B, H, N]
    s_new = torch.addcmul(kv, torch.exp(wf).unsqueeze(-1), s)  # diag(exp(w)) S + k^T v
    return y.to(r.dtype), s_new
