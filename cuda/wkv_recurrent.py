"""Recurrent WKV: one decode step (``wkv_step``), and the same step looped over a sequence.

O(1) work per token in plain PyTorch, differentiable by autograd. ``wkv_step`` is the decode op
(one token, [B, H, N]); ``wkv_recurrent`` has the sequence contract of `rwkv_mm.kernels.wkv.wkv`
and is what the dispatcher there runs for T = 1 (a decode step given as a sequence of one).
The contract (`contract.check_wkv_inputs`) and the dtype rules are those of every WKV
implementation: math in fp32 (fp64 when an input is fp64), y in ``r``'s dtype.
"""

from __future__ import annotations

import torch

from .contract import check_wkv_inputs, compute_dtype, empty_sequence_result

__all__ = ["wkv_recurrent", "wkv_step"]


def _step(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on inputs already in the compute dtype: r, k, v, w [B, H, N], u [H, N],
    state [B, H, N, N] or None (zeros). Returns y [B, H, N] and the new state [B, H, N, N]."""
    bonus = (r * u * k).sum(-1, keepdim=True) * v  # [B, H, N]
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)  # [B, H, N, N]
    if state is None:
        return bonus, kv
    y = (r.unsqueeze(-2) @ state).squeeze(-2) + bonus  # [B, H, N]
    s_new = torch.addcmul(kv, torch.exp(w).unsqueeze(-1), state)  # diag(exp(w)) S + k^T v
    return y, s_new


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
        WkvInputError: when an input breaks the contract (the message names the argument).
    """
    check_wkv_inputs(r, k, v, w, u, state, single_step=True)
    dt = compute_dtype(r, k, v, w, u, state)
    y, s_new = _step(*(x.to(dt) for x in (r, k, v, w, u)), None if state is None else state.to(dt))
    return y.to(r.dtype), s_new


def wkv_recurrent(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV over a sequence, one decode step per token (O(T) steps, each O(1)).

    Arguments, results and errors as `rwkv_mm.kernels.wkv.wkv`: r, k, v, w [B, T, H, N], u
    [H, N], optional state [B, H, N, N]; returns y [B, T, H, N] in ``r``'s dtype and the final
    state [B, H, N, N] fp32; raises `WkvInputError` for an input that breaks the contract.
    """
    check_wkv_inputs(r, k, v, w, u, state)
    dt = compute_dtype(r, k, v, w, u, state)
    if r.shape[1] == 0:
        return empty_sequence_result(r, state, dt)
    uf = u.to(dt)  # [H, N]
    s = None if state is None else state.to(dt)  # [B, H, N, N]
    ys = []
    for t in range(r.shape[1]):
        y, s = _step(r[:, t].to(dt), k[:, t].to(dt), v[:, t].to(dt), w[:, t].to(dt), uf, s)
        ys.append(y)
    return torch.stack(ys, dim=1).to(r.dtype), s
