"""WKV-7 (RWKV-7 "Goose") as a plain loop over time: the slow, obviously-correct truth.

Used by tests and benchmarks (the dispatcher in `rwkv_mm.kernels.wkv` lists it as the "reference"
of the "wkv7" family but never picks it). Written independently of the decode step
(`wkv7_recurrent`), the chunked form (`wkv7_chunked`) and the CUDA kernels, with its own ops
(einsum over named indices; tests also check it against BlinkDL's runtime formula).

Recurrence per (batch, head), S an N x N matrix indexed [value, key] (BlinkDL's runtime layout):

    S_t = S_{t-1} (diag(exp(w_t)) + a_t b_t^T) + v_t k_t^T        y_t = S_t r_t

``w`` is the *log* decay (<= 0). The contract: `rwkv_mm.kernels.contract.check_wkv7_inputs`.
"""

from __future__ import annotations

import torch

from .contract import check_wkv7_inputs, compute_dtype, empty_sequence_result

__all__ = ["wkv7_reference"]


def wkv7_reference(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step WKV-7 over a sequence.

    Args:
        r, w, k, v, a, b: [B, T, H, N]; ``w`` is the log decay (<= 0), per-step factor ``exp(w)``.
        state: optional [B, H, N, N] initial state, value index first; ``None`` means zeros.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype and the final state [B, H, N, N]. The
        math runs in fp32 (fp64 when any input is fp64), and the state is returned in that dtype.
        Differentiable by autograd with respect to every input and the state.

    Raises:
        WkvInputError: an input breaks the contract (`rwkv_mm.kernels.contract`).
    """
    check_wkv7_inputs(r, w, k, v, a, b, state)
    B, T, H, N = r.shape
    dt = compute_dtype(r, w, k, v, a, b, state)
    if T == 0:
        return empty_sequence_result(r, state, dt)
    s = torch.zeros(B, H, N, N, dtype=dt, device=r.device) if state is None else state.to(dt)
    ys = []
    for t in range(T):
        rt, wt, kt, vt, at, bt = (x[:, t].to(dt) for x in (r, w, k, v, a, b))  # [B, H, N]
        sa = torch.einsum("bhij,bhj->bhi", s, at)  # S_{t-1} a_t, [B, H, N_value]
        s = (s * torch.exp(wt)[:, :, None, :] + torch.einsum("bhi,bhj->bhij", sa, bt)
             + torch.einsum("bhi,bhj->bhij", vt, kt))  # [B, H, N_value, N_key]
        ys.append(torch.einsum("bhij,bhj->bhi", s, rt))  # [B, H, N_value]
    return torch.stack(ys, dim=1).to(r.dtype), s
