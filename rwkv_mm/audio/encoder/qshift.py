"""Q-Shift (Vision-RWKV): the token shift of RWKV made two-dimensional for a patch grid.

Tokens are patches of a (time × frequency) grid. Four channel groups of size γ·C take the
value of the neighbour at distance s from the left, right, above and below (zero past the
edges); channels beyond 4γ·C keep their own value. The result is the "other token" input of
the lerp / ddlerp mixing, in place of the previous token.
"""

from __future__ import annotations

import torch


def q_shift(x: torch.Tensor, grid: tuple[int, int], distance: int = 1, gamma: float = 0.25) -> torch.Tensor:
    """Quad-directional shift of tokens x [B, H·W, C] laid out row-major on a grid (H, W).

    H indexes time (rows), W frequency (columns). Group 0 (channels [0, γC)) reads the left
    neighbour (w - s), group 1 the right (w + s), group 2 the row above (h - s), group 3 the
    row below (h + s). Returns [B, H·W, C].
    """
    B, N, C = x.shape
    H, W = grid
    if H * W != N:
        raise ValueError(f"q_shift: grid {grid} has {H * W} cells but x has {N} tokens")
    if not 0.0 < gamma <= 0.25:
        raise ValueError(f"q_shift: gamma={gamma} must lie in (0, 0.25]")
    if distance < 1:
        raise ValueError(f"q_shift: distance={distance} must be >= 1")
    g = int(C * gamma)
    s = distance
    xg = x.view(B, H, W, C)
    out = torch.zeros_like(xg)
    out[:, :, s:, 0:g] = xg[:, :, :-s, 0:g]  # from the left
    out[:, :, :-s, g:2 * g] = xg[:, :, s:, g:2 * g]  # from the right
    out[:, s:, :, 2 * g:3 * g] = xg[:, :-s, :, 2 * g:3 * g]  # from above (earlier time)
    out[:, :-s, :, 3 * g:4 * g] = xg[:, s:, :, 3 * g:4 * g]  # from below (later time)
    out[..., 4 * g:] = xg[..., 4 * g:]
    return out.view(B, N, C)
