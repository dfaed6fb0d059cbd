"""Parameter and state counts against the paper's formulas (Eq. 23, 27, 30) and Table 11."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import RWKV, RWKVConfig


def count_params(config: RWKVConfig) -> int:
    with torch.device("meta"):
        model = RWKV(config)
    return sum(p.numel() for p in model.parameters())


def eagle_formula(D: int, L: int, V: int) -> int:  # Eq. 23
    return 13 * D * D * L + 14 * D * L + 4 * D + 2 * D * V


def finch_formula(D: int, L: int, V: int) -> int:  # Eq. 27 (LoRA ranks 32 and 64)
    return 13 * D * D * L + 464 * D * L + 4 * D + 2 * D * V


@pytest.mark.parametrize("D,L,V", [(64, 2, 100), (256, 3, 1000), (512, 24, 128)])
def test_param_count_equals_formulas_when_ffn_is_3_5_d(D, L, V):
    ffn = int(3.5 * D)
    eagle = RWKVConfig(version="5", n_layer=L, n_embd=D, vocab_size=V, dim_ffn=ffn)
    finch = RWKVConfig(version="6", n_layer=L, n_embd=D, vocab_size=V, dim_ffn=ffn)
    assert count_params(eagle) == eagle_formula(D, L, V)
    assert count_params(finch) == finch_formula(D, L, V)


# Table 11 of the paper (World vocabulary, V = 65536): (version, L, D, parameters in billions)
TABLE_11 = [
    ("5", 24, 1024, 0.46),  # Eagle 0.4B
    ("5", 24, 2048, 1.58),  # Eagle 1.5B
    ("5", 32, 2560, 3.06),  # Eagle 3B
    ("5", 32, 4096, 7.52),  # Eagle 7B
    ("6", 24, 2048, 1.60),  # Finch 1.6B
    ("6", 32, 2560, 3.10),  # Finch 3B
]


@pytest.mark.parametrize("version,L,D,billions", TABLE_11)
def test_table_11_sizes(version, L, D, billions):
    config = RWKVConfig(version=version, n_layer=L, n_embd=D, vocab_size=65536)
    n = count_params(config)
    assert round(n / 1e9, 2) == billions
    formula = eagle_formula if version == "5" else finch_formula
    assert n == formula(D, L, 65536)  # at these sizes int(3.5·D) is already a multiple of 32


def test_eagle_0b4_exact_and_state_size():
    config = RWKVConfig(version="5", n_layer=24, n_embd=1024, vocab_size=65536)
    assert count_params(config) == 461_721_600  # 4.62e8
    assert config.state_numel() == 1_622_016 == 66 * 1024 * 24  # Eq. 30 with N = 64
    with torch.device("meta"):
        model = RWKV(config)
    assert model.zero_state(1).numel_per_sequence() == 1_622_016


def test_finch_7b_uses_doubled_lora_ranks():
    config = RWKVConfig(version="6", n_layer=32, n_embd=4096, vocab_size=65536)
    assert (config.tm_lora_rank, config.decay_lora_rank) == (64, 128)
    with torch.device("meta"):
        att = RWKV(config).blocks[0].att
    assert tuple(att.time_maa_w1.shape) == (4096, 5 * 64)
    assert tuple(att.time_maa_w2.shape) == (5, 64, 4096)
    assert tuple(att.time_decay_w1.shape) == (4096, 128)
    # per-layer vectors: 464·D at ranks 32/64 becomes 16 + 2·5·64 + 2·128 = 912 per D
    assert count_params(config) == 13 * 4096**2 * 32 + 912 * 4096 * 32 + 4 * 4096 + 2 * 4096 * 65536


def test_default_ffn_is_rounded_to_32():
    assert RWKVConfig(n_embd=768).dim_ffn == 2688
    assert RWKVConfig(n_embd=2560).dim_ffn == 8960
    assert RWKVConfig(n_embd=100, head_size=4).dim_ffn == 320


@pytest.mark.parametrize("kwargs,match", [
    (dict(version="8"), "version"),
    (dict(n_embd=100, head_size=64), "multiple of head_size"),
    (dict(head_size=30, n_embd=120), "multiple of 4"),
    (dict(n_layer=0), "n_layer"),
])
def test_bad_config_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RWKVConfig(**kwargs)
