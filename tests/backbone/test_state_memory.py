"""A returned recurrent state holds only its own numbers, not the prefill's activations."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import RWKVConfig
from rwkv_mm.backbone.build import build_backbone


@pytest.mark.parametrize("version", ["5", "6", "goldfinch"])
def test_token_shift_states_do_not_keep_the_whole_sequence_alive(version):
    config = RWKVConfig(version=version, n_layer=3, n_embd=64, vocab_size=50, head_size=32)
    model = build_backbone(config).eval()
    T = 512
    with torch.no_grad():
        _, state = model(torch.randint(0, 50, (2, T)), last_only=True)
    for name in ("att_x", "ffn_x"):
        for i, x in enumerate(getattr(state, name)):
            assert x.shape == (2, 64)
            # a view of the [B, T, D] activations would hold T times more memory than it shows
            assert x.untyped_storage().nbytes() == x.numel() * x.element_size(), f"{name}[{i}]"
