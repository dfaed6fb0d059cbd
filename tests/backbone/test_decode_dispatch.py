"""Time-mix layers leave the choice of WKV implementation to the kernels' dispatch: a decode
step (T = 1) through `wkv` is bit-identical to the `wkv_step` call the layers used to make."""

from __future__ import annotations

import pytest
import torch

import rwkv_mm.backbone.goldfinch.finch_c2 as finch_c2
import rwkv_mm.backbone.time_mix as time_mix
from rwkv_mm.backbone import RWKVConfig, build_backbone
from rwkv_mm.kernels.wkv import choose_wkv_impl, wkv, wkv_step


def _step_for_t1(r, k, v, w, u, state):
    """The layers' former branch: `wkv_step` on the one token, `wkv` otherwise."""
    if r.shape[1] == 1:
        y, state = wkv_step(r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, state)
        return y.unsqueeze(1), state
    return wkv(r, k, v, w, u, state)


def _decode(model, tokens: torch.Tensor) -> torch.Tensor:
    state, logits = None, []
    for t in range(tokens.shape[1]):
        out, state = model(tokens[:, t:t + 1], state)  # [B, 1, V]
        logits.append(out)
    return torch.cat(logits, 1)  # [B, T, V]


@pytest.mark.parametrize("version", ["5", "6", "goldfinch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_decoding_through_the_dispatch_is_the_step(version, dtype, monkeypatch):
    assert choose_wkv_impl("cpu", (dtype,) * 4, 1, 16) == "step"
    torch.manual_seed(0)
    model = build_backbone(RWKVConfig(version=version, n_layer=3, n_embd=64, head_size=16,
                                      vocab_size=50)).to(dtype).eval()
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.02)  # away from the zero-initialised projections
    tokens = torch.randint(0, 50, (2, 6))
    through_dispatch = _decode(model, tokens)
    monkeypatch.setattr(time_mix, "wkv", _step_for_t1)
    monkeypatch.setattr(finch_c2, "wkv", _step_for_t1)
    assert torch.equal(_decode(model, tokens), through_dispatch)
