"""The WKV contract, checked once here for every implementation (reference, chunked, step, CUDA).

Layout: r, k, v, w are [B, T, H, N] ([B, H, N] for a single decode step), floating point, any
float dtype each; ``w`` is the *log* decay (<= 0, per-step factor ``exp(w)``) and may be a
broadcast view (Eagle's static decay). u is [H, N]. The state is [B, H, N, N], key index first,
fp32 by convention (fp64 is accepted: the tight gradient tests use it). Per head:

    y_t = r_t (S + diag(u) k_t^T v_t)
    S  <- diag(exp(w_t)) S + k_t^T v_t

Dtype rules: outputs come back in ``r``'s dtype, the state in the compute dtype, which is fp32,
or fp64 when any input is fp64 (`compute_dtype`). What an implementation can't take beyond this
(a device, a head size, fp64 in the CUDA kernels) is its own capability, not the contract.

Every implementation calls `check_wkv_inputs` first, so a contract violation raises the same
`WkvInputError` (a ValueError naming the argument) whichever implementation the dispatcher in
`rwkv_mm.kernels.wkv` picks.

WKV-7 (Goose, `check_wkv7_inputs`): r, w, k, v, a, b [B, T, H, N] ([B, H, N] for one step), w
the *log* decay as above, no u; the state is [B, H, N, N] fp32 with the *value* index first,
S[b, h, value, key] -- exactly how BlinkDL's runtime stores it (``state[i*3+1]``, [H, N, N] per
layer, ``vk = v.view(H,N,1) @ k.view(H,1,N)``), so states compare with the runtime's directly.
Per head, with column vectors over channels:

    S_t = S_{t-1} (diag(exp(w_t)) + a_t b_t^T) + v_t k_t^T        y_t = S_t r_t

(Goose passes a = -kappa_hat, b = kappa_hat * a_iclr; the runtime's CUDA op takes ``w_rt`` with
``w = -exp(w_rt)``.) The same dtype rules apply.
"""

from __future__ import annotations

import torch

__all__ = ["WkvInputError", "check_wkv7_inputs", "check_wkv_inputs", "compute_dtype", "empty_sequence_result"]


class WkvInputError(ValueError):
    """An input breaks the WKV contract; the message starts with the argument's name."""


def check_wkv_inputs(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None,
    single_step: bool = False,
) -> None:
    """Check the contract: r, k, v, w [B, T, H, N] ([B, H, N] with ``single_step``), u [H, N],
    state None or [B, H, N, N], all floating point.

    Raises:
        WkvInputError: the first argument that breaks it, named at the start of the message.
    """
    _check_same_shapes(r, (("k", k), ("v", v), ("w", w)), single_step)
    B, H, N = r.shape[0], r.shape[-2], r.shape[-1]
    if u.shape != (H, N):
        raise WkvInputError(f"u must be [H, N] = {(H, N)}, got shape {tuple(u.shape)}")
    _check_state_and_dtypes(r, state, (("r", r), ("k", k), ("v", v), ("w", w), ("u", u)))


def check_wkv7_inputs(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
    single_step: bool = False,
) -> None:
    """Check the WKV-7 contract: r, w, k, v, a, b [B, T, H, N] ([B, H, N] with ``single_step``),
    state None or [B, H, N, N] (value index first), all floating point.

    Raises:
        WkvInputError: the first argument that breaks it, named at the start of the message.
    """
    _check_same_shapes(r, (("w", w), ("k", k), ("v", v), ("a", a), ("b", b)), single_step)
    _check_state_and_dtypes(r, state, (("r", r), ("w", w), ("k", k), ("v", v), ("a", a), ("b", b)))


def _check_same_shapes(r: torch.Tensor, others: tuple[tuple[str, torch.Tensor], ...], single_step: bool) -> None:
    """r is [B, T, H, N] ([B, H, N] for one step) and every other operand has its shape."""
    layout = "[B, H, N]" if single_step else "[B, T, H, N]"
    if r.dim() != (3 if single_step else 4):
        raise WkvInputError(f"r must be {layout}, got shape {tuple(r.shape)}")
    for name, x in others:
        if x.shape != r.shape:
            raise WkvInputError(f"{name} must have r's shape {tuple(r.shape)}, got shape {tuple(x.shape)}")


def _check_state_and_dtypes(
    r: torch.Tensor, state: torch.Tensor | None, named: tuple[tuple[str, torch.Tensor], ...]
) -> None:
    """state is None or [B, H, N, N]; every tensor (state included) is floating point."""
    B, H, N = r.shape[0], r.shape[-2], r.shape[-1]
    if state is not None and state.shape != (B, H, N, N):
        raise WkvInputError(f"state must be [B, H, N, N] = {(B, H, N, N)}, got shape {tuple(state.shape)}")
    for name, x in (*named, ("state", state)):
        if x is not None and not x.is_floating_point():
            raise WkvInputError(f"{name} must be a floating-point tensor, got {x.dtype} with shape {tuple(x.shape)}")


def compute_dtype(*xs: torch.Tensor | None) -> torch.dtype:
    """The dtype of the internal math and of the returned state: fp32, or fp64 when any input is."""
    return torch.float64 if any(x is not None and x.dtype == torch.float64 for x in xs) else torch.float32


def empty_sequence_result(
    r: torch.Tensor, state: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """What WKV returns for T = 0: y [B, 0, H, N] in ``r``'s dtype and the state unchanged
    (a copy in ``dtype``; zeros [B, H, N, N] when there is none)."""
    B, _, H, N = r.shape
    if state is None:
        s_out = torch.zeros(B, H, N, N, dtype=dtype, device=r.device)
    else:
        s_out = state.to(dtype, copy=True)
    return r.new_zeros(B, 0, H, N), s_out
