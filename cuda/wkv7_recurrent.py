"""Recurrent WKV-7: one decode step (``wkv7_step``), and the same step looped over a sequence.

O(1) work per token in plain PyTorch (a rank-one update of the state), differentiable by
autograd. ``wkv7_step`` is the decode op (one token, [B, H, N]); ``wkv7_recurrent`` has the
sequence contract of `rwkv_mm.kernels.wkv.wkv7` and is what the dispatcher runs for T = 1.
Contract and dtype rules: `rwkv_mm.kernels.contract.check_wkv7_inputs` (state [B, H, N, N],
value index first; math in fp32, fp64 when an input is fp64; y in ``r``'s dtype).
"""

from __future__ import annotations

import torch

from .contract import check_wkv7_inputs, compute_dtype, empty_sequence_result

__all__ = ["wkv7_recurrent", "wkv7_step"]


def _step(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on inputs already in the compute dtype: r, w, k, v, a, b [B, H, N], state
    [B, H, N, N] or None (zeros). Returns y [B, H, N] and the new state [B, H, N, N]."""
    vk = v.unsqueeze(-1) * k.unsqueeze(-2)  # [B, H, N_value, N_key]
    if state is None:
        s_new = vk
    else:
        sa = (state @ a.unsqueeze(-1)).squeeze(-1)  # [B, H, N_value]: S a
        s_new = state * torch.exp(w).unsqueeze(-2) + sa.unsqueeze(-1) * b.unsqueeze(-2) + vk
    return (s_new @ r.unsqueeze(-1)).squeeze(-1), s_new


def wkv7_step(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent WKV-7 decode step (O(1) in the sequence length).

    Args:
        r, w, k, v, a, b: [B, H, N] for a single token; ``w`` is the log decay (<= 0).
        state: [B, H, N, N] fp32 state (value index first); None means zeros.

    Returns:
        ``(y, state_out)``: y [B, H, N] in ``r``'s dtype, the new state [B, H, N, N] fp32.

    Raises:
        WkvInputError: when an input breaks the contract (the message names the argument).
    """
    check_wkv7_inputs(r, w, k, v, a, b, state, single_step=True)
    dt = compute_dtype(r, w, k, v, a, b, state)
    y, s_new = _step(*(x.to(dt) for x in (r, w, k, v, a, b)), None if state is None else state.to(dt))
    return y.to(r.dtype), s_new


def wkv7_recurrent(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV-7 over a sequence, one decode step per token (O(T) steps, each O(1)).

    Arguments, results and errors as `rwkv_mm.kernels.wkv.wkv7`: r, w, k, v, a, b [B, T, H, N],
    optional state [B, H, N, N]; returns y [B, T, H, N] in ``r``'s dtype and the final state
    [B, H, N, N] fp32; raises `WkvInputError` for an input that breaks the contract.
    """
    check_wkv7_inputs(r, w, k, v, a, b, state)
    dt = compute_dtype(r, w, k, v, a, b, state)
    if r.shape[1] == 0:
        return empty_sequence_result(r, state, dt)
    s = None if state is None else state.to(dt)  # [B, H, N, N]
    ys = []
    for t in range(r.shape[1]):
        y, s = _step(*(x[:, t].to(dt) for x in (r, w, k, v, a, b)), s)
        ys.append(y)
    return torch.stack(ys, dim=1).to(r.dtype), s
