"""Q-Shift, the bidirectional blocks and the AudioRWKV model."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.audio.encoder import q_shift
from rwkv_mm.audio.model import STFT_FRONT_END_PARAMS, AudioRWKV, AudioRWKVConfig, parameter_report
from rwkv_mm.backbone.channel_mix import ChannelMix
from rwkv_mm.backbone.config import RWKVConfig
from rwkv_mm.backbone.time_mix import TimeMixFinch, token_shift


def q_shift_loop(x, H, W, s, gamma):
    """Cell by cell: group 0 ← (h, w-s), 1 ← (h, w+s), 2 ← (h-s, w), 3 ← (h+s, w), zero outside."""
    B, N, C = x.shape
    g = int(C * gamma)
    grid = x.view(B, H, W, C)
    out = torch.zeros_like(grid)
    for h in range(H):
        for w in range(W):
            for group, (dh, dw) in enumerate([(0, -s), (0, s), (-s, 0), (s, 0)]):
                hh, ww = h + dh, w + dw
                if 0 <= hh < H and 0 <= ww < W:
                    out[:, h, w, group * g:(group + 1) * g] = grid[:, hh, ww, group * g:(group + 1) * g]
            out[:, h, w, 4 * g:] = grid[:, h, w, 4 * g:]
    return out.view(B, N, C)


@pytest.mark.parametrize("H,W,s,gamma", [(3, 4, 1, 0.25), (5, 2, 2, 0.25), (4, 4, 1, 0.125), (1, 6, 1, 0.25)])
def test_q_shift_matches_cell_by_cell_definition(H, W, s, gamma):
    x = torch.randn(2, H * W, 16)
    torch.testing.assert_close(q_shift(x, (H, W), s, gamma), q_shift_loop(x, H, W, s, gamma), rtol=0, atol=0)


def test_q_shift_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="grid"):
        q_shift(torch.randn(1, 10, 8), (3, 4))


def test_time_and_channel_mix_hooks_leave_the_causal_path_unchanged():
    cfg = RWKVConfig(version="6", n_layer=2, n_embd=32, head_size=16, vocab_size=10)
    from rwkv_mm.backbone import RWKV

    model = RWKV(cfg)  # App. I init
    att, ffn = model.blocks[1].att, model.blocks[1].ffn
    with torch.no_grad():
        for p in att.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, prev = torch.randn(2, 7, 32), torch.randn(2, 32)
    state = torch.zeros(2, 2, 16, 16)
    a = att(x, prev, state)
    b = att(x, None, state, shifted=token_shift(x, prev))
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(ffn(x, prev)[0], ffn(x, None, shifted=token_shift(x, prev))[0])


def test_bidirectional_time_mix_reads_later_tokens():
    cfg = RWKVConfig(version="6", n_layer=2, n_embd=32, head_size=16, vocab_size=10)
    att = TimeMixFinch(cfg, 1, bidirectional=True)
    for p in att.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(1, 6, 32, requires_grad=True)
    out, _, state = att(x, None, None, shifted=torch.zeros_like(x))
    assert state is None
    out[0, 0].sum().backward()  # the first token's output...
    assert x.grad[0, 5].abs().sum() > 0  # ...depends on the last token
    with pytest.raises(ValueError, match="keeps no state"):
        att(x, None, torch.zeros(1, 2, 16, 16))


def tiny(version="6", **kw):
    backbone = RWKVConfig(version=version, n_layer=2, n_embd=32, head_size=16, dim_ffn=128, tm_lora_rank=4,
                          decay_lora_rank=4)
    args = dict(num_classes=7, num_mel_bins=32, target_frames=48, patch=(8, 8), stride=(8, 8))
    return AudioRWKV(AudioRWKVConfig(**{**args, **kw}, backbone=backbone))


@pytest.mark.parametrize("version", ["5", "6"])
def test_model_shapes_variable_length_and_non_causality(version):
    model = tiny(version)
    assert model.patch_embed.grid == (6, 4)
    x = torch.randn(3, 48, 32)
    assert model(x).shape == (3, 7)
    assert model(torch.randn(2, 96, 32)).shape == (2, 7)  # longer input: position table interpolated
    # every patch's token influences the pooled output of a patch far away (bidirectional mixing)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(1, 48, 32, requires_grad=True)
    model.forward_features(x)[0].sum().backward()
    assert x.grad[0, -8:].abs().sum() > 0 and x.grad[0, :8].abs().sum() > 0


def test_overlapping_patches_and_drop_path_train_vs_eval():
    model = tiny(stride=(4, 8), drop_path=0.5)
    assert model.patch_embed.grid == (11, 4)
    x = torch.randn(2, 48, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_t_and_s_sizes_near_the_paper_and_the_report_adds_up():
    t = AudioRWKV(AudioRWKVConfig.preset("T", num_classes=527, num_mel_bins=128, target_frames=1024))
    rep = parameter_report(t)
    assert rep["total"] == sum(p.numel() for p in t.parameters()) == 7_512_335
    assert rep["total"] == sum(v for k, v in rep.items() if not k.startswith("total"))
    assert rep["total_with_stft_front_end"] == rep["total"] + STFT_FRONT_END_PARAMS
    assert abs(rep["total_with_stft_front_end"] / 8.7e6 - 1) < 0.02
    s_cfg = AudioRWKVConfig.preset("AudioRWKV-S", num_classes=527, num_mel_bins=128, target_frames=1024)
    with torch.device("meta"):  # count without allocating
        n_s = sum(p.numel() for p in AudioRWKV(s_cfg, init_weights=False).parameters())
    assert n_s == 27_410_447 and abs((n_s + STFT_FRONT_END_PARAMS) / 28.4e6 - 1) < 0.02


def test_config_round_trip_and_errors():
    cfg = AudioRWKVConfig.preset("T", num_classes=3, num_mel_bins=64, target_frames=100)
    assert AudioRWKVConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown AudioRWKVConfig keys"):
        AudioRWKVConfig.from_dict({"n_layers": 3})
    with pytest.raises(ValueError, match="num_classes is not set"):
        AudioRWKV(AudioRWKVConfig())
    with pytest.raises(ValueError, match="unknown AudioRWKV preset"):
        AudioRWKVConfig.preset("XL")


@pytest.mark.parametrize("pool", ["mean", "max", "mean+max"])
def test_pooling_options(pool):
    model = tiny(pool=pool).eval()
    x = torch.randn(2, 48, 32)
    tokens, grid = model.patch_embed(x)
    h = model.ln0(tokens)
    for block in model.blocks:
        h = block(h, grid)
    h = model.ln_out(h)
    expected = {"mean": h.mean(1), "max": h.amax(1), "mean+max": h.mean(1) + h.amax(1)}[pool]
    torch.testing.assert_close(model.forward_features(x), expected)
    with pytest.raises(ValueError, match="pool"):
        tiny(pool="median")
