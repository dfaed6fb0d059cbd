"""Parameter counts of the released Goose (RWKV-7) sizes, from meta-device models (V = 65536),
beside their published names; and the count's closed form."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import RWKVConfig, build_backbone

# (published name, L, D, published parameters in billions). The RWKV-7 paper (arXiv 2503.14456)
# trains World-3 models "from 0.19 billion to 2.9 billion parameters" (files named 0.1B ... 2.9B:
# 0.1B is 0.19B, 0.4B is 0.45B, 1.5B is 1.52B); G1 7.2B is named by its count.
RELEASES = [
    ("RWKV-7 World 0.1B", 12, 768, 0.19),
    ("RWKV-7 World 0.4B", 24, 1024, 0.45),
    ("RWKV-7 World 1.5B", 24, 2048, 1.52),
    ("RWKV-7 World 2.9B", 32, 2560, 2.9),
    ("RWKV-7 G1 7.2B", 32, 4096, 7.2),
]


def count(config: RWKVConfig) -> int:
    with torch.device("meta"):
        model = build_backbone(config)
    return sum(p.numel() for p in model.parameters())


def closed_form(c: RWKVConfig) -> int:
    """12·D²·L (r, k, v, o; 4D key and value) + 18·D·L (six mixes, w0, a0, k_k, k_a, r_k, ln_x,
    ffn.x_k, ln1, ln2) + 2·D·(w + a + g)·L + (D + 2·D·v)·(L - 1) (value residual, not in layer 0)
    + 4·D (ln0, ln_out) + 2·D·V (emb, head); F = 4·D."""
    D, L, V = c.n_embd, c.n_layer, c.vocab_size
    loras = 2 * D * (c.w_lora_rank + c.a_lora_rank + c.g_lora_rank) * L
    return 12 * D * D * L + 18 * D * L + loras + (D + 2 * D * c.v_lora_rank) * (L - 1) + 4 * D + 2 * D * V


@pytest.mark.parametrize("name,L,D,billions", RELEASES, ids=[r[0] for r in RELEASES])
def test_released_sizes(name, L, D, billions):
    config = RWKVConfig(version="7", n_layer=L, n_embd=D, vocab_size=65536)
    n = count(config)
    print(f"{name:18s} L={L:2d} D={D:4d}  {n:>13,d} parameters ({n / 1e9:.3f}B; published {billions}B)")
    assert n == closed_form(config)
    assert abs(n / 1e9 - billions) / billions <= 0.02


def test_0b1_exact_and_state_size():
    config = RWKVConfig(version="7", n_layer=12, n_embd=768, vocab_size=65536)
    assert count(config) == 191_034_624
    assert config.state_numel() == 12 * (2 * 768 + 12 * 64 * 64)  # L·(2D + H·N²)
    with torch.device("meta"):
        model = build_backbone(config)
    assert model.zero_state(1).numel_per_sequence() == config.state_numel()
