"""Random WKV-7 inputs of realistic scale, shared by the WKV-7 tests.

As Goose makes them: kappa_hat unit-norm per head, a = -kappa_hat, b = kappa_hat * alpha with the
in-context learning rate alpha in (0, 1), the log decay w = -exp(-0.5) * sigmoid(x) (decays in
[0.545, 1]); ``decay="wide"`` draws w = -exp(x), x in [-8, 3] (decays from ~1 - 3e-4 to ~2e-9),
``decay="mixed"`` is -1e-9 or -100 per token and channel.
"""

from __future__ import annotations

import torch

NAMES7 = ("r", "w", "k", "v", "a", "b", "state")


def make_inputs7(
    B: int,
    T: int,
    H: int = 2,
    N: int = 16,
    *,
    with_state: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    decay: str = "goose",
) -> tuple[torch.Tensor | None, ...]:
    """r, w, k, v, a, b [B, T, H, N] and the state [B, H, N, N] (value index first) or None."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    r, k, v = (randn(B, T, H, N) for _ in range(3))
    kappa = torch.nn.functional.normalize(randn(B, T, H, N), dim=-1)
    alpha = torch.rand(B, T, H, N, generator=g, dtype=torch.float64)
    if decay == "goose":
        w = -torch.exp(torch.tensor(-0.5, dtype=torch.float64)) * torch.sigmoid(randn(B, T, H, N) * 2)
    elif decay == "wide":
        w = -torch.exp(torch.rand(B, T, H, N, generator=g, dtype=torch.float64) * 11 - 8)
    elif decay == "mixed":
        strong = torch.rand(B, T, H, N, generator=g, dtype=torch.float64) < 0.5
        w = torch.where(strong, torch.tensor(-100.0, dtype=torch.float64), torch.tensor(-1e-9, dtype=torch.float64))
    else:
        raise ValueError(decay)
    state = randn(B, H, N, N) * 0.5 if with_state else None
    out = (r, w, k, v, -kappa, kappa * alpha, state)
    return tuple(None if x is None else x.to(dtype) for x in out)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the largest magnitude of b."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


#: Result order of `run_both7`: y, final state, then the gradients of r, w, k, v, a, b, state.
RESULTS7 = ("y", "state", "dr", "dw", "dk", "dv", "da", "db", "ds0")


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def run_both7(fn, inputs, dtype: torch.dtype, *, w_dtype: torch.dtype | None = None, grad_y: bool = True,
              grad_state: bool = True, seed: int = 0, device: str = "cpu"):
    """(results of ``fn``, fp64 reference results), each in the order of `RESULTS7`.

    ``fn`` gets the inputs and dy rounded to ``dtype`` (w to ``w_dtype``, the state fp32); the
    reference (`wkv7_reference`) gets the same rounded values in fp64, so only ``fn``'s own error
    is measured, on the CPU. Random upstream gradients for y (``grad_y``) and the final state
    (``grad_state``). Results come back on the CPU.
    """
    from rwkv_mm.kernels.wkv7_reference import wkv7_reference

    r = inputs[0]
    B, T, H, N = r.shape
    g = torch.Generator().manual_seed(100 + seed)
    gy = torch.randn(B, T, H, N, generator=g, dtype=torch.float64).to(dtype).to(device) if grad_y else None
    gs = torch.randn(B, H, N, N, generator=g, dtype=torch.float64).float().to(device) if grad_state else None
    dtypes = (dtype, w_dtype or dtype, dtype, dtype, dtype, dtype, torch.float32)
    kern_in = [None if x is None else x.to(dt).to(device).requires_grad_() for x, dt in zip(inputs, dtypes)]
    ref_in = [None if x is None else x.detach().cpu().double().requires_grad_() for x in kern_in]
    results = []
    for f, xs in ((fn, kern_in), (wkv7_reference, ref_in)):
        y, s = f(*xs)
        outs = [o for o, go in ((y, gy), (s, gs)) if go is not None]
        grads_out = [go.to(o.device, o.dtype) for o, go in ((y, gy), (s, gs)) if go is not None]
        leaves = [x for x in xs if x is not None]
        grads = list(torch.autograd.grad(outs, leaves, grads_out, allow_unused=True))
        out = [y.detach(), s.detach(), *grads, *[None] * (7 - len(grads))]
        results.append([None if x is None else x.cpu() for x in out])
    return results[0], results[1]


def assert_close7(got, ref, tol) -> None:
    """Relative RMS error of each result below its tolerance (a float: the same for all)."""
    for name, a, b in zip(RESULTS7, got, ref):
        if b is None:
            assert a is None or not a.any(), name
            continue
        t = tol if isinstance(tol, float) else tol[name]
        err = rel_rms(a, b)
        assert err < t, f"{name}: relative RMS error {err:.2e} >= {t:.0e}"
