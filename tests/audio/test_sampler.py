"""Balanced sampling weights (AST formula) and weighted draws."""

from __future__ import annotations

import torch

from rwkv_mm.audio.sampler import BalancedDraws, balanced_weights


def test_weights_follow_the_ast_formula():
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool)
    w = balanced_weights(y)
    cw = 1000.0 / (torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64) + 0.01)
    torch.testing.assert_close(w, torch.stack([cw[0], cw[0] + cw[1], cw[0], torch.tensor(0.0, dtype=torch.float64), cw[2]]))


def test_draws_are_proportional_to_weights_and_skip_zero_weight():
    data = list(range(4))
    weights = torch.tensor([1.0, 2.0, 0.0, 7.0])
    view = BalancedDraws(data, weights)
    torch.manual_seed(0)
    counts = torch.bincount(torch.tensor([view[0] for _ in range(20000)]), minlength=4).double()
    assert counts[2] == 0
    torch.testing.assert_close(counts / counts.sum(), torch.tensor([0.1, 0.2, 0.0, 0.7], dtype=torch.float64),
                               atol=0.012, rtol=0)
    assert len(view) == 4


def test_draws_repeat_under_the_same_seed():
    view = BalancedDraws(list(range(50)), torch.rand(50))
    torch.manual_seed(3)
    a = [view[i] for i in range(30)]
    torch.manual_seed(3)
    assert a == [view[i] for i in range(30)]
