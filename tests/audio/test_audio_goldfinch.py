"""AudioRWKV with `version: goldfinch`: bidirectional Finch-C2 blocks, the compressed key cache
over ln0(patch embeddings), non-causal GOLD blocks on top."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.audio.checkpoint import load_tagger, save_tagger
from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig, parameter_report
from rwkv_mm.backbone import RWKVConfig
# the GoldFinch encoder blocks AudioRWKV gets from the backbone (`RWKVEncoder.add_blocks`)
from rwkv_mm.backbone.goldfinch.encoder import FinchC2EncoderBlock as AudioBlock
from rwkv_mm.backbone.goldfinch.encoder import GoldEncoderBlock as AudioGoldBlock
from rwkv_mm.backbone.goldfinch.finch_c2 import TimeMixFinchC2
from rwkv_mm.backbone.goldfinch.gold import GoldAttention
from rwkv_mm.backbone.time_mix import token_shift


def tiny_gf(**kw) -> AudioRWKV:
    backbone = RWKVConfig(version="goldfinch", n_layer=3, n_embd=32, head_size=16, dim_ffn=128,
                          tm_lora_rank=4, decay_lora_rank=4)
    args = dict(num_classes=7, num_mel_bins=32, target_frames=48, patch=(8, 8), stride=(8, 8))
    torch.manual_seed(0)
    return AudioRWKV(AudioRWKVConfig(**{**args, **kw}, backbone=backbone))


def _perturb_(model: torch.nn.Module, std: float = 0.05) -> None:
    """Move every weight off its init (zeroed outputs and LoRAs would hide dependencies)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))


def test_layout_shapes_gradients_and_parameter_report():
    model = tiny_gf()
    assert [type(b) for b in model.blocks] == [AudioBlock, AudioBlock, AudioGoldBlock]
    assert isinstance(model.blocks[0].att, TimeMixFinchC2) and model.blocks[0].att.bidirectional
    assert isinstance(model.blocks[2].att, GoldAttention)
    assert model.w_kv_cache_a.weight.shape == (2, 32)  # D -> D/16
    x = torch.randn(3, 48, 32)
    assert model(x).shape == (3, 7)
    assert model.forward_tokens(x).shape == (3, 6 * 4, 32)
    assert model(torch.randn(2, 96, 32)).shape == (2, 7)  # longer input: table interpolated
    _perturb_(model)
    model(x).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    rep = parameter_report(model)
    assert rep["total"] == sum(v for k, v in rep.items() if not k.startswith("total"))


def test_patch_zero_depends_on_the_last_patch():
    """Non-causal everywhere: the first patch's encoded token reads the last patch's input."""
    model = tiny_gf()
    _perturb_(model)
    x = torch.randn(1, 48, 32, requires_grad=True)
    model.forward_tokens(x)[0, 0].sum().backward()
    assert x.grad[0, -8:, -8:].abs().sum() > 0  # the last patch (bottom-right of the grid)


@pytest.mark.parametrize("part", ["finch_c2", "gold"])
def test_each_goldfinch_block_alone_is_bidirectional(part):
    """Finch-C2 through wkv_bidirectional, GOLD through attention without a causal mask."""
    torch.manual_seed(1)
    cfg = RWKVConfig(version="goldfinch", n_layer=3, n_embd=32, head_size=16, vocab_size=1)
    block = (AudioGoldBlock if part == "gold" else AudioBlock)(cfg, 2 if part == "gold" else 0)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    h = torch.randn(1, 6, 32, requires_grad=True)
    keys = torch.randn(1, 6, 32, requires_grad=True)
    x0 = torch.randn(1, 6, 32, requires_grad=True)
    block(h, (2, 3), keys, x0)[0, 0].sum().backward()  # patch (0, 0); (1, 2) is not a Q-Shift neighbour
    if part == "finch_c2":
        assert h.grad[0, 5].abs().sum() > 0
    else:  # a GOLD layer reads other positions only through the key cache and x0 (its values)
        assert keys.grad[0, 5].abs().sum() > 0 and x0.grad[0, 5].abs().sum() > 0
        with pytest.raises(ValueError, match="needs keys and x0"):
            block(h, (2, 3))


def test_causal_paths_are_unchanged_by_the_encoder_hooks():
    """`shifted` = the token shift gives the causal Finch-C2 / GOLD outputs exactly."""
    torch.manual_seed(2)
    cfg = RWKVConfig(version="goldfinch", n_layer=3, n_embd=32, head_size=16, vocab_size=1)
    c2, gold = TimeMixFinchC2(cfg, 0), GoldAttention(cfg, 2)
    for p in [*c2.parameters(), *gold.parameters()]:
        torch.nn.init.normal_(p, std=0.3)
    x, prev = torch.randn(2, 5, 32), torch.randn(2, 32)
    torch.testing.assert_close(c2(x, prev, None)[0], c2(x, None, None, shifted=token_shift(x, prev))[0])
    k = v = torch.randn(2, 2, 5, 16)
    torch.testing.assert_close(gold(x, prev, k, v)[0], gold(x, None, k, v, shifted=token_shift(x, prev))[0])
    with pytest.raises(ValueError, match="non-causal"):
        gold(x, prev, torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16), causal=False)


def test_tagger_checkpoint_round_trip(tmp_path):
    from rwkv_mm.audio.features import AudioFeatures

    model = tiny_gf().eval()
    _perturb_(model)
    save_tagger(tmp_path / "t.pt", model, AudioFeatures(target_frames=48),
                ["/m/a"] * 7, [f"c{i}" for i in range(7)], step=1)
    loaded, _, _ = load_tagger(tmp_path / "t.pt")
    x = torch.randn(2, 48, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_audio_runner_trains_a_goldfinch_tagger(tmp_path):
    """`backbone.version=goldfinch` in an audio recipe: the runner trains, evaluates and saves it."""
    import json

    from rwkv_mm.cli import main
    from test_runner import fast  # the runner test's small generated set and tiny shapes

    run_dir = tmp_path / "run"
    args = [*fast(tmp_path), "backbone.version=goldfinch", "backbone.n_layer=2"]
    assert main(["train", "audio/synth_tiny", *args, "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and 0.0 <= summary["mAP"] <= 1.0
    model, _, _ = load_tagger(run_dir / "model.pt")
    assert type(model.blocks[1]) is AudioGoldBlock and model.config.backbone.version == "goldfinch"
