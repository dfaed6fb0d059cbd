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

WKV-7 (Goose) is a second *family* of the same dispatch: ``wkv7`` / ``wkv7_step`` run one of
`WKV7_IMPLS` (the same four names, from the ``wkv7_*`` modules), picked by the same
`choose_wkv_impl` with ``family="wkv7"``; `WKV_FAMILIES` maps each family to its table. Its
contract (`check_wkv7_inputs`): r, w, k, v, a, b [B, T, H, N] with ``w`` the log decay, the state
[B, H, N, N] fp32 with the *value* index first (BlinkDL's runtime layout). Per head:

    S_t = S_{t-1} (diag(exp(w_t)) + a_t b_t^T) + v_t k_t^T        y_t = S_t r_t
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable

import torch

from . import wkv7_cuda as _cuda7
from . import wkv_cuda as _cuda
from .contract import WkvInputError, check_wkv7_inputs, check_wkv_inputs, compute_dtype
from .wkv7_chunked import wkv7_chunked
from .wkv7_recurrent import wkv7_recurrent, wkv7_step
from .wkv7_reference import wkv7_reference
from .wkv_chunked import wkv_chunked
from .wkv_recurrent import wkv_recurrent, wkv_step
from .wkv_reference import wkv_reference

__all__ = [
    "WKV7_IMPLS",
    "WKV_FAMILIES",
    "WKV_IMPLS",
    "WkvInputError",
    "check_wkv7_inputs",
    "check_wkv_inputs",
    "choose_wkv_impl",
    "compute_dtype",
    "wkv",
    "wkv7",
    "wkv7_cuda_or_fallback",
    "wkv7_step",
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

#: Every implementation of ``wkv7`` (WKV-7, Goose), by the same names (same signature).
WKV7_IMPLS: dict[str, WkvFn] = {
    "reference": wkv7_reference,
    "chunked": wkv7_chunked,
    "step": wkv7_recurrent,
    "cuda": _cuda7.wkv7_cuda,
}

#: The op families of the one dispatch: ``choose_wkv_impl(..., family=)`` names an entry of these.
WKV_FAMILIES: dict[str, dict[str, WkvFn]] = {"wkv": WKV_IMPLS, "wkv7": WKV7_IMPLS}

_failed_builds: dict[tuple[str, int], str] = {}  # (family, head size) -> why its CUDA build failed (warned once)

#: Each family's kernels: (what warnings call them, build(head_size); looked up at call time).
_KERNELS: dict[str, tuple[str, Callable[[int], object]]] = {
    "wkv": ("WKV CUDA kernels", lambda n: _cuda.build(n)),
    "wkv7": ("WKV-7 CUDA kernels", lambda n: _cuda7.build7(n)),
}


def _kernels_built(head_size: int, family: str = "wkv") -> bool:
    """Whether the family's CUDA kernels for this head size are built (building them on first use).

    A failed build is warned about once and remembered: later calls return False at once.
    """
    if (family, head_size) in _failed_builds:
        return False
    what, build = _KERNELS[family]
    try:
        build(head_size)  # cached after the first call
    except _cuda.WkvBuildError as e:
        _failed_builds[family, head_size] = str(e)
        warnings.warn(f"{what} unavailable, using the chunked PyTorch form: {e}", RuntimeWarning, stacklevel=5)
        return False
    return True


def choose_wkv_impl(
    device: torch.device | str, dtypes: Iterable[torch.dtype], seq_len: int, head_size: int, family: str = "wkv"
) -> str:
    """The name in ``WKV_FAMILIES[family]`` that ``wkv`` (``wkv7`` for "wkv7") runs for such inputs.

    Rules, in order:
      1. ``seq_len == 1`` (a decode step, with or without a state): "step".
      2. On a CUDA device, when the family's kernels cover the inputs (`wkv_cuda.kernels_cover`:
         every dtype fp32 / fp16 / bf16, head size in `wkv_cuda.HEAD_SIZES`, seq_len > 0) and are
         built (built here on first use; a failed build warns once, then counts as unavailable):
         "cuda".
      3. Otherwise (any CPU input, fp64, other head sizes, no kernels): "chunked".
    "reference" is never chosen: it is the slow truth the others are tested against.

    Args:
        device: where the inputs are.
        dtypes: the dtypes of r, k, v and w (of r, w, k, v, a, b for "wkv7").
        seq_len: T.
        head_size: N.
        family: "wkv" (Eagle, Finch) or "wkv7" (Goose), a key of `WKV_FAMILIES`.

    Raises:
        ValueError: an unknown family.
    """
    if family not in WKV_FAMILIES:
        raise ValueError(f"unknown WKV family {family!r}; expected one of {sorted(WKV_FAMILIES)}")
    if seq_len == 1:
        return "step"
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and _cuda.kernels_cover(dtypes, head_size, seq_len) and _kernels_built(head_size, family):
        return "cuda"
    return "chunked"


def _own_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Every implementation does its math in fp32 (fp64) and returns y in r's dtype: an enclosing
    autocast region (bf16 training) must not turn its matmuls to bf16 — nor mix bf16 results
    with the fp32 state in one in-place product, which fails on the CPU."""
    kind = x.device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


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
    with _own_precision(r):
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


def _dispatch7(
    device: torch.device | str,
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the WKV-7 contract, then run the implementation chosen for inputs on ``device``."""
    check_wkv7_inputs(r, w, k, v, a, b, state)
    dtypes = tuple(x.dtype for x in (r, w, k, v, a, b))
    name = choose_wkv_impl(device, dtypes, r.shape[1], r.shape[-1], family="wkv7")
    with _own_precision(r):
        return WKV7_IMPLS[name](r, w, k, v, a, b, state)


def wkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV-7 (RWKV-7 "Goose") over a sequence, with the implementation `choose_wkv_impl` picks.

    Per head: ``S_t = S_{t-1} (diag(exp(w_t)) + a_t b_t^T) + v_t k_t^T`` and ``y_t = S_t r_t``
    (no bonus term: Goose adds its ``(r * k * r_k).sum() * v`` outside the op). Goose passes
    ``a = -kappa_hat`` and ``b = kappa_hat * a_iclr``, BlinkDL's ``RWKV7_OP(state, r, w, k, v,
    -kk, kk*a)`` argument order.

    Args:
        r, w, k, v, a, b: [B, T, H, N]; ``w`` is the log decay (<= 0): Goose's
            ``-exp(-0.5) * sigmoid(w0 + lora)``, i.e. ``-exp(w_rt)`` for the runtime kernel's ``w_rt``.
        state: optional [B, H, N, N] fp32 initial state, *value* index first (the runtime's
            layout); None means zeros.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype, state_out [B, H, N, N] fp32 (fp64 when
        an input is fp64). Gradients flow to every input and to ``state``.

    Raises:
        WkvInputError: when an input breaks the contract (the message names the argument).
    """
    return _dispatch7(r.device, r, w, k, v, a, b, state)


def wkv7_cuda_or_fallback(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``wkv7`` as it runs for tensors on a CUDA device: the same rule with the device taken as
    CUDA (the WKV-7 kernels where they cover the inputs and build, else the chunked form)."""
    return _dispatch7("cuda", r, w, k, v, a, b, state)
