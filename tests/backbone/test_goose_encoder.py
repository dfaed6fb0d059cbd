"""Goose in encoders: the bidirectional WKV-7 (forward scan + reversed scan, the current token's
write counted once) against an fp64 loop written from its definition, and Goose blocks through
`RWKVEncoder` (v_first handed from block 0, gradient checkpointing)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rwkv_mm.backbone import RWKVConfig, RWKVEncoder, set_grad_checkpointing
from rwkv_mm.backbone.goose.encoder import GooseEncoderBlock
from rwkv_mm.backbone.goose.time_mix import wkv7_bidirectional
from test_goose_utils import randomize_goose_


def goose_inputs(B=2, T=7, H=2, N=8, seed=0):
    """r, w, k, v, a, b [B, T, H, N] as Goose makes them (a = -κ̂, b = κ̂·α), fp64."""
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, dtype=torch.float64) for _ in range(3))
    kappa = nn.functional.normalize(torch.randn(B, T, H, N, generator=g, dtype=torch.float64), dim=-1)
    alpha = torch.rand(B, T, H, N, generator=g, dtype=torch.float64)
    w = -0.6 * torch.sigmoid(torch.randn(B, T, H, N, generator=g, dtype=torch.float64))
    return r, w, k, v, -kappa, kappa * alpha


def bidirectional_loop(r, w, k, v, a, b):
    """y_t = S_{t-1} G_t r_t + v_t (k_t·r_t) + S'_{t+1} G_t r_t with G_t = diag(e^{w_t}) + a_t b_tᵀ,
    S the forward state over tokens < t and S' the backward one over tokens > t ([value, key])."""
    B, T, H, N = r.shape
    y = torch.zeros_like(r)

    def G(t):  # [B, H, N, N]
        return torch.diag_embed(torch.exp(w[:, t])) + a[:, t, ..., :, None] * b[:, t, ..., None, :]

    def write(t):
        return v[:, t, ..., :, None] * k[:, t, ..., None, :]

    for t in range(T):
        before = torch.zeros(B, H, N, N, dtype=r.dtype)
        for i in range(t):
            before = before @ G(i) + write(i)
        after = torch.zeros(B, H, N, N, dtype=r.dtype)
        for i in range(T - 1, t, -1):
            after = after @ G(i) + write(i)
        S = (before + after) @ G(t) + write(t)
        y[:, t] = (S @ r[:, t, ..., None])[..., 0]
    return y


def test_bidirectional_wkv7_equals_its_definition():
    x = goose_inputs()
    torch.testing.assert_close(wkv7_bidirectional(*x), bidirectional_loop(*x), rtol=1e-10, atol=1e-10)


def test_bidirectional_wkv7_commutes_with_reversal_and_reads_both_sides():
    x = goose_inputs(T=9, seed=1)
    y = wkv7_bidirectional(*x)
    y_rev = wkv7_bidirectional(*(t.flip(1) for t in x))
    torch.testing.assert_close(y_rev.flip(1), y, rtol=1e-10, atol=1e-10)
    r, w, k, v, a, b = (t.clone().requires_grad_() for t in x)
    wkv7_bidirectional(r, w, k, v, a, b)[:, 0].sum().backward()
    assert v.grad[:, -1].abs().sum() > 0 and k.grad[:, -1].abs().sum() > 0  # first token reads the last


class Seq(RWKVEncoder):
    """A 1-D encoder of Goose blocks, as a front end writes one."""

    def __init__(self, config: RWKVConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.ln0 = nn.LayerNorm(config.n_embd)
        self.add_blocks(config, shift=None, drop_path=drop_path)
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.init_block_weights_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_out(self.run_blocks(self.ln0(x)))


def make_encoder(drop_path: float = 0.0, seed: int = 0) -> Seq:
    torch.manual_seed(seed)
    enc = Seq(RWKVConfig(version="7", n_layer=3, n_embd=32, head_size=16, vocab_size=1), drop_path)
    return randomize_goose_(enc, seed)


def test_encoder_blocks_pass_v_first_and_read_both_directions():
    enc = make_encoder()
    assert [type(b) for b in enc.blocks] == [GooseEncoderBlock] * 3
    assert enc.blocks[0].att.bidirectional and not hasattr(enc.blocks[0].att, "v1")
    x = torch.randn(2, 6, 32, requires_grad=True)
    out = enc(x)
    out[:, 0].sum().backward()
    assert x.grad[:, -1].abs().sum() > 0  # non-causal
    # the last block's value residual reads block 0's values
    h = torch.randn(1, 5, 32)
    _, v_first = enc.blocks[0](h)
    y1, same = enc.blocks[2](h, None, v_first)
    y2, _ = enc.blocks[2](h, None, v_first + 1.0)
    assert same is v_first and not torch.allclose(y1, y2)
    with pytest.raises(ValueError, match="v_first"):
        enc.blocks[1](h)


def test_encoder_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 6, 32)
    grads = []
    for cp in (False, True):
        enc = make_encoder(drop_path=0.2, seed=3).train()
        assert set_grad_checkpointing(enc, cp) == 1
        torch.manual_seed(5)  # the same DropPath masks
        enc(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
