"""The WKV recurrence as a plain loop over time: the slow, obviously-correct truth.

Used by tests and benchmarks (the dispatcher in `rwkv_mm.kernels.wkv` lists it as "reference"
but never picks it itself). Apart from the shared contract check it is written independently of
the decode step (`rwkv_mm.kernels.wkv_recurrent`) and of the chunked form, so comparisons
between them mean something.

Recurrence per (batch, head), with S an N x N matrix indexed [key, value]:

    y_t = r_t (S + diag(u) k_t^T v_t)
    S  <- diag(exp(w_t)) S + k_t^T v_t

``w`` is the *log* decay (w <= 0).
"""

from __future__ import annotations

import torch

from .contract import check_wkv_inputs

__all__ = ["wkv_reference"]


def wkv_reference(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step WKV over a sequence.

    Args:
        r, k, v, w: [B, T, H, N]; ``w`` is the log decay (<= 0), per-step factor ``exp(w)``.
        u: [H, N] bonus for the current token.
        state: optional [B, H, N, N] initial state (key index first); ``None`` means zeros.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype and the final state [B, H, N, N].
        The math runs in fp32 (fp64 when any input is fp64, which the gradient tests use), and the
        state is returned in that dtype.

    Raises:
        WkvInputError: an input breaks the contract (`rwkv_mm.kernels.contract`).
    """
    check_wkv_inputs(r, k, v, w, u, state)
    B, T, H, N = r.shape
    dt = torch.float64 if torch.float64 in {x.dtype for x in (r, k, v, w, u)} else torch.float32
    if state is None:
        s = torch.zeros(B, H, N, N, dtype=dt, device=r.device)
    else:
        s = state.to(dt)
    uu = u.to(dt)[None, :, :, None]  # [1, H, N, 1]
    ys = []
    for t in range(T):
        rt = r[:, t].to(dt)  # [B, H, N]
        kt = k[:, t].to(dt)
        vt = v[:, t].to(dt)
        wt = w[:, t].to(dt)
        kv = torch.einsum("bhi,bhj->bhij", kt, vt)  # [B, H, N, N]
        ys.append(torch.einsum("bhi,bhij->bhj", rt, s + uu * kv))  # [B, H, N]
        s = torch.exp(wt)[..., None] * s + kv
    if T:
        y = torch.stack(ys, dim=1)  # [B, T, H, N]
    else:
        y = torch.zeros(B, 0, H, N, dtype=dt, device=r.device)
    return y.to(r.dtype), s
