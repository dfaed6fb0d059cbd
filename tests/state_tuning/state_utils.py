"""Helpers of the state-tuning tests: a small model with a random learned initial state."""

from __future__ import annotations

import torch

from rwkv_mm.backbone import add_initial_state, initial_state_params
from rwkv_test_utils import tiny_model

TOKENS = [5, 17, 250, 3, 3, 99, 0, 42, 7, 123, 64, 1, 200, 150, 11, 8, 299, 77, 2, 31]


@torch.no_grad()
def random_state_(model, seed: int = 5, shift: bool = False, scale: float = 0.5):
    """Give `model` a learned initial state of random values (the WKV state in [-scale, scale]
    per entry, the shift vectors of a LayerNorm output's scale)."""
    add_initial_state(model, shift=shift)
    g = torch.Generator().manual_seed(seed)
    for name, p in initial_state_params(model).items():
        p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * (scale if name.endswith("time_state") else 1.0))
    return model


def tuned_tiny(version: str = "6", shift: bool = False, seed: int = 7, **kw):
    """A random tiny Eagle/Finch (V=300, 3 layers, 4 heads of 32) with a random learned state."""
    kw = {"n_layer": 3, "n_embd": 128, "head_size": 32, "vocab_size": 300, **kw}
    return random_state_(tiny_model(version=version, seed=seed, **kw), seed=seed + 1, shift=shift)
