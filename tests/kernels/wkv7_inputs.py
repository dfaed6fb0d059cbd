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
