"""Comparing a WKV implementation with the fp64 step reference: outputs and every gradient.

Shared by the CUDA tests (test_wkv_cuda.py) and the CPU emulation tests (test_wkv_cuda_emulated.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rwkv_mm.kernels.wkv_reference import wkv_reference

#: Result order of `run_both`: y, final state, then the gradients of r, k, v, w, u, initial state.
NAMES = ("y", "state", "dr", "dk", "dv", "dw", "du", "ds0")
WkvFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def run_both(
    fn: WkvFn,
    inputs: tuple[torch.Tensor | None, ...],
    dtype: torch.dtype,
    *,
    w_dtype: torch.dtype | None = None,
    grad_y: bool = True,
    grad_state: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """(results of ``fn``, fp64 reference results), each in the order of `NAMES`.

    ``fn`` gets the inputs and dy rounded to ``dtype`` (w to ``w_dtype``, u and the state fp32);
    the reference gets the same rounded values in fp64, so only ``fn``'s own error is measured.
    Random upstream gradients for y (``grad_y``) and for the final state (``grad_state``).
    """
    r, k, v, w, u, s0 = inputs
    B, T, H, N = r.shape
    g = torch.Generator().manual_seed(100 + seed)
    gy = torch.randn(B, T, H, N, generator=g, dtype=torch.float64).to(dtype).to(device) if grad_y else None
    gs = torch.randn(B, H, N, N, generator=g, dtype=torch.float64).float().to(device) if grad_state else None
    w_dtype = w_dtype or dtype
    dtypes = (dtype, dtype, dtype, w_dtype, torch.float32, torch.float32)
    kern_in = [None if x is None else x.to(dt).to(device).requires_grad_() for x, dt in zip(inputs, dtypes)]
    ref_in = [None if x is None else x.detach().double().requires_grad_() for x in kern_in]
    results = []
    for f, xs in ((fn, kern_in), (wkv_reference, ref_in)):
        y, s = f(*xs)
        outs, grads_out = [], []
        if gy is not None:
            outs.append(y)
            grads_out.append(gy.to(y.dtype))
        if gs is not None:
            outs.append(s)
            grads_out.append(gs.to(s.dtype))
        leaves = [x for x in xs if x is not None]
        grads = list(torch.autograd.grad(outs, leaves, grads_out, allow_unused=True))
        results.append([y.detach(), s.detach(), *grads, *[None] * (6 - len(grads))])
    return results[0], results[1]


def assert_close(got: list[torch.Tensor | None], ref: list[torch.Tensor | None], tol: dict[str, float] | float) -> None:
    """Relative RMS error of each result below its tolerance (a float: the same for all)."""
    for name, a, b in zip(NAMES, got, ref):
        if b is None:  # the reference's outputs don't depend on it: zero gradient
            assert a is None or not a.any(), name
            continue
        t = tol if isinstance(tol, float) else tol[name]
        err = rel_rms(a, b)
        assert err < t, f"{name}: relative RMS error {err:.2e} >= {t:.0e}"
