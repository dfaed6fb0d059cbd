"""The WKV ops inside a bf16 autocast region (bf16 training on the CPU or a GPU): their math stays
fp32 — the result equals the same bf16 inputs outside autocast —, and an Eagle/Finch/Goose
model trains a step under CPU autocast (before: WKV's chunked form mixed autocast's bf16 matmul
results with the fp32 state in one in-place product and failed on the CPU)."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import RWKVConfig, build_backbone
from rwkv_mm.kernels.wkv import wkv, wkv7


def _inputs(seed: int, T: int = 37, H: int = 2, N: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(1, T, H, N, generator=g).bfloat16() for _ in range(3))
    w = (-torch.exp(torch.rand(1, T, H, N, generator=g) * 4 - 3)).bfloat16()
    return [r, k, v, w]


def test_wkv_under_autocast_is_its_fp32_math():
    r, k, v, w = _inputs(0)
    u = torch.randn(2, 16)
    state = torch.randn(1, 2, 16, 16)
    plain = wkv(r, k, v, w, u, state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = wkv(r, k, v, w, u, state)
    assert auto[0].dtype == torch.bfloat16 and auto[1].dtype == torch.float32
    torch.testing.assert_close(auto[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(auto[1], plain[1], rtol=0, atol=0)


def test_wkv7_under_autocast_is_its_fp32_math():
    r, k, v, w = _inputs(1)
    g = torch.Generator().manual_seed(2)
    kk = torch.nn.functional.normalize(torch.randn(1, 37, 2, 16, generator=g), dim=-1)
    a, b = (-kk).bfloat16(), (kk * torch.rand(1, 37, 2, 16, generator=g)).bfloat16()
    plain = wkv7(r, w, k, v, a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = wkv7(r, w, k, v, a, b)
    torch.testing.assert_close(auto[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(auto[1], plain[1], rtol=0, atol=0)


@pytest.mark.parametrize("version", ["5", "6", "7"])
def test_a_training_step_under_cpu_autocast(version):
    torch.manual_seed(0)
    model = build_backbone(RWKVConfig(version=version, n_layer=2, n_embd=64, head_size=16, vocab_size=50))
    tokens = torch.randint(0, 50, (2, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
