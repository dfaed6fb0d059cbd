"""AudioRWKV with `version: "7"`: bidirectional Goose blocks (forward + reversed WKV-7 scans,
v_first from block 0), built by the backbone (`RWKVEncoder.add_blocks`) with no audio code
naming the family."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.audio.checkpoint import load_tagger, save_tagger
from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig, parameter_report
from rwkv_mm.backbone import RWKVConfig
# the Goose encoder blocks AudioRWKV gets from the backbone (`RWKVEncoder.add_blocks`)
from rwkv_mm.backbone.goose.encoder import GooseEncoderBlock


def tiny_goose_tagger(**kw) -> AudioRWKV:
    backbone = RWKVConfig(version="7", n_layer=3, n_embd=32, head_size=16, dim_ffn=128)
    args = dict(num_classes=7, num_mel_bins=32, target_frames=48, patch=(8, 8), stride=(8, 8))
    torch.manual_seed(0)
    return AudioRWKV(AudioRWKVConfig(**{**args, **kw}, backbone=backbone))


def _perturb_(model: torch.nn.Module, std: float = 0.05) -> None:
    """Move every weight off its init (zeroed outputs and LoRAs would hide dependencies)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))


def test_layout_shapes_gradients_and_parameter_report():
    model = tiny_goose_tagger()
    assert [type(b) for b in model.blocks] == [GooseEncoderBlock] * 3
    assert model.blocks[0].att.bidirectional and "blocks.1.att.v1" in model.state_dict()
    x = torch.randn(3, 48, 32)
    assert model(x).shape == (3, 7)
    assert model(torch.randn(2, 96, 32)).shape == (2, 7)  # longer input: table interpolated
    _perturb_(model)
    model(x).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    rep = parameter_report(model)
    assert rep["total"] == sum(v for k, v in rep.items() if not k.startswith("total"))


def test_patch_zero_depends_on_the_last_patch():
    model = tiny_goose_tagger()
    _perturb_(model)
    x = torch.randn(1, 48, 32, requires_grad=True)
    model.forward_tokens(x)[0, 0].sum().backward()
    assert x.grad[0, -8:, -8:].abs().sum() > 0  # the last patch (bottom-right of the grid)


def test_tagger_checkpoint_round_trip(tmp_path):
    from rwkv_mm.audio.features import AudioFeatures

    model = tiny_goose_tagger().eval()
    _perturb_(model)
    save_tagger(tmp_path / "t.pt", model, AudioFeatures(target_frames=48),
                ["/m/a"] * 7, [f"c{i}" for i in range(7)], step=1)
    loaded, _, _ = load_tagger(tmp_path / "t.pt")
    assert loaded.config.backbone.version == "7"
    x = torch.randn(2, 48, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_few_training_steps_lower_the_loss():
    """The tagger's encoder trains: 6 AdamW steps on a fixed batch."""
    model = tiny_goose_tagger().train()
    x, y = torch.randn(4, 48, 32), (torch.rand(4, 7) > 0.5).float()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_audio_runner_trains_a_goose_tagger(tmp_path):
    """`backbone.version=7` in an audio recipe: the runner trains, evaluates and saves it."""
    from rwkv_mm.recipe import load_recipe
    from rwkv_mm.runners import get_runner
    from test_runner import fast  # the runner test's small generated set and tiny shapes

    run_dir = tmp_path / "run"
    recipe = load_recipe("audio/synth_tiny", [*fast(tmp_path), "backbone.version=7", "backbone.n_layer=2"])
    summary = get_runner(recipe.runner).fn(recipe.config, run_dir, False)
    assert summary["steps"] == 4 and 0.0 <= summary["mAP"] <= 1.0
    model, _, _ = load_tagger(run_dir / "model.pt")
    assert type(model.blocks[1]) is GooseEncoderBlock and model.config.backbone.version == "7"
