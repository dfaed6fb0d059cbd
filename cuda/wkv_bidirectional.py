"""Bidirectional (non-causal) WKV for encoders: a forward scan plus a backward scan.

Used by AudioRWKV (and any encoder over a whole sequence). With e_j = exp(w_j) and, per head,

    y_t = r_t ( sum_{i<t} diag(prod_{i<j<t} e_j) k_i^T v_i          forward scan, earlier keys
              + diag(u) k_t^T v_t                                    bonus on the current token
              + sum_{i>t} diag(prod_{t<j<i} e_j) k_i^T v_i )         backward scan, later keys

both scans use the same per-token decays (each key is decayed by the tokens strictly between it
and the query, whichever side it is on). The forward part is exactly ``wkv(r, k, v, w, u)``;
the backward part is ``wkv`` over the time-reversed sequence with a zero bonus (the current
token is counted once, in the forward part). Both scans go through the public ``wkv``, so the
one dispatcher there picks their implementation by the same rule as for any causal call (the
CUDA kernels for CUDA tensors they cover, else the chunked form; the step for T = 1), and
autograd gives every gradient.
"""

from __future__ import annotations

import torch

from .contract import check_wkv_inputs
from .wkv import wkv

__all__ = ["wkv_bidirectional"]


def _flip_time(x: torch.Tensor) -> torch.Tensor:
    """Reverse dim 1 (T); a tensor broadcast over T (stride 0, e.g. Eagle's static decay) is
    returned as is: reversing it changes nothing and would materialise [B, T, H, N]."""
    if x.shape[1] <= 1 or x.stride(1) == 0:
        return x
    return x.flip(1)


def wkv_bidirectional(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
) -> torch.Tensor:
    """Non-causal WKV: every token reads every other token, decayed by the distance between them.

    Args:
        r, k, v, w: [B, T, H, N]; ``w`` is the log decay (<= 0), per-step factor ``exp(w)``.
        u: [H, N] bonus for the current token.

    Returns:
        y [B, T, H, N] in ``r``'s dtype (internal math fp32, fp64 for fp64 inputs).

    Raises:
        WkvInputError: an input breaks the WKV contract (the message names the argument).
    """
    check_wkv_inputs(r, k, v, w, u, None)
    y_fwd, _ = wkv(r, k, v, w, u)  # [B, T, H, N]: keys i <= t
    y_bwd, _ = wkv(_flip_time(r), _flip_time(k), _flip_time(v), _flip_time(w), torch.zeros_like(u))
    return y_fwd + _flip_time(y_bwd)  # keys i > t
