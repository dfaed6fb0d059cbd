"""Goose's initialisation against RWKV-LM's x070 code (RWKV-v7/train_temp: the module inits of
RWKV_Tmix_x070 / RWKV_CMix_x070, then generate_init_weight), transcribed here loop by loop."""

from __future__ import annotations

import torch

from rwkv_mm.backbone import RWKVConfig, build_backbone

L, C, N, V = 4, 64, 16, 200


def rwkv_lm_time_mix(layer_id: int) -> dict[str, torch.Tensor]:
    """The schedules RWKV_Tmix_x070.__init__ sets, written as its loops are."""
    ratio_0_to_1 = layer_id / (L - 1)
    ratio_1_to_almost0 = 1.0 - (layer_id / L)
    ddd = torch.ones(1, 1, C)
    for i in range(C):
        ddd[0, 0, i] = i / C
    www, zigzag, linear = torch.zeros(C), torch.zeros(C), torch.zeros(C)
    for n in range(C):
        linear[n] = n / (C - 1) - 0.5
        zigzag[n] = ((n % N) - ((N - 1) / 2)) / ((N - 1) / 2)
        zigzag[n] = zigzag[n] * abs(zigzag[n])
        www[n] = -6 + 6 * (n / (C - 1)) ** (1 + 1 * ratio_0_to_1 ** 0.3)
    out = {
        "x_r": 1.0 - torch.pow(ddd, 0.2 * ratio_1_to_almost0),
        "x_w": 1.0 - torch.pow(ddd, 0.9 * ratio_1_to_almost0),
        "x_k": 1.0 - torch.pow(ddd, 0.7 * ratio_1_to_almost0),
        "x_v": 1.0 - torch.pow(ddd, 0.7 * ratio_1_to_almost0),
        "x_a": 1.0 - torch.pow(ddd, 0.9 * ratio_1_to_almost0),
        "x_g": 1.0 - torch.pow(ddd, 0.2 * ratio_1_to_almost0),
        "w0": www.reshape(1, 1, C) + 0.5 + zigzag * 2.5,
        "a0": torch.zeros(1, 1, C) - 0.19 + zigzag * 0.3 + linear * 0.4,
        "k_k": torch.zeros(1, 1, C) + 0.71 - linear * 0.1,
        "k_a": torch.zeros(1, 1, C) + 1.02,
        "r_k": torch.zeros(C // N, N) - 0.04,
    }
    if layer_id > 0:
        out["v0"] = torch.zeros(1, 1, C) + 0.73 - linear * 0.4
    return out


def assert_orthogonal(w: torch.Tensor, gain: float) -> None:
    """Every singular value of w equals `gain` (nn.init.orthogonal_ works in fp32)."""
    s = torch.linalg.svdvals(w.detach().double())
    torch.testing.assert_close(s, torch.full_like(s, gain), rtol=1e-5, atol=1e-6)


def test_schedules_loras_and_matrices_follow_rwkv_lm():
    torch.manual_seed(0)
    model = build_backbone(RWKVConfig(version="7", n_layer=L, n_embd=C, head_size=N, vocab_size=V))
    for i, block in enumerate(model.blocks):
        att = block.att
        for name, want in rwkv_lm_time_mix(i).items():
            torch.testing.assert_close(getattr(att, name).detach(), want.view_as(getattr(att, name)),
                                       rtol=1e-6, atol=1e-6, msg=f"blocks.{i}.att.{name}")
        ddd = torch.arange(C) / C
        torch.testing.assert_close(block.ffn.x_k.detach().view(-1), 1.0 - ddd ** ((1.0 - i / L) ** 4))
        for lora in ("w", "a", "v", "g"):
            if lora == "v" and i == 0:
                assert not hasattr(att, "v1")
                continue
            assert torch.count_nonzero(getattr(att, f"{lora}1")) == 0  # zeros
            assert_orthogonal(getattr(att, f"{lora}2"), 0.1)
        for name, gain in (("receptance", 1.0), ("key", 0.1), ("value", 1.0)):
            assert_orthogonal(getattr(att, name).weight, gain)
        assert torch.count_nonzero(att.output.weight) == 0 and torch.count_nonzero(block.ffn.value.weight) == 0
        assert_orthogonal(block.ffn.key.weight, 1.0)
        torch.testing.assert_close(att.ln_x.weight.detach(), torch.full((C,), ((i + 1) / L) ** 0.7))
        assert torch.count_nonzero(att.ln_x.bias) == 0
    assert model.emb.weight.abs().max() <= 1e-4
    assert_orthogonal(model.head.weight, 0.5 * (V / C) ** 0.5)
