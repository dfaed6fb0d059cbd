"""Balanced sampling for long-tailed multi-label data (AST / PANNs style).

Each class c gets weight 1000 / (n_c + 0.01), n_c = clips labelled c; a clip's weight is the
sum over its labels. Clips are then drawn with replacement in proportion to their weight, so
rare classes are seen about as often as common ones.
"""

from __future__ import annotations

from typing import Any

import torch


def balanced_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-clip sampling weights [n] (float64) from a multi-hot matrix [n, C]."""
    y = targets.to(torch.float64)
    class_weight = 1000.0 / (y.sum(0) + 0.01)  # [C]
    return y @ class_weight  # [n]


class BalancedDraws:
    """A view of `dataset` whose items are weighted draws with replacement.

    `len(view) == len(dataset)` (one epoch = as many draws as clips). The index passed to
    `view[i]` is not used: each access draws a clip from torch's global generator (by inverse
    CDF, O(log n)), which the trainer seeds and saves in checkpoints, so runs repeat exactly
    and resume where they stopped. Clips of weight 0 (no labels) are never drawn.
    """

    def __init__(self, dataset: Any, weights: torch.Tensor) -> None:
        if len(weights) != len(dataset):
            raise ValueError(f"{len(weights)} weights for {len(dataset)} clips")
        if not bool((weights >= 0).all()) or float(weights.sum()) <= 0:
            raise ValueError("sampling weights must be >= 0 with a positive sum")
        self.dataset = dataset
        self.cdf = torch.cumsum(weights.to(torch.float64), 0)  # [n]
        self.cdf /= self.cdf[-1].clone()

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self) -> int:
        """One clip index, P(i) ∝ weight i."""
        u = torch.rand((), dtype=torch.float64)
        return min(int(torch.searchsorted(self.cdf, u, right=True)), len(self.cdf) - 1)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.draw()]
