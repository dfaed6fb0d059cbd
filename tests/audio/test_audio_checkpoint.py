"""Tagger checkpoints, weight averaging (`rwkv-mm audio average`) and tagging."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from rwkv_mm.audio.checkpoint import (average_checkpoints, average_state_dicts, load_tagger,
                                      read_tagger_checkpoint, save_tagger)
from rwkv_mm.cli import build_parser
from rwkv_mm.audio.fbank import FbankConfig
from rwkv_mm.audio.features import AudioFeatures, FeatureStats
from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig
from rwkv_mm.backbone import RWKVConfig
from rwkv_mm.audio.tagger import tag_waveform, windows

MIDS, NAMES = ["/m/a", "/m/b", "/m/c"], ["Aa", "Bb", "Cc"]


def audio_cli(*argv: str) -> int:
    args = build_parser().parse_args(["audio", *argv])
    return args.func(args)


def make(seed: int):
    torch.manual_seed(seed)
    model = AudioRWKV(AudioRWKVConfig(
        backbone=RWKVConfig(n_layer=1, n_embd=32, head_size=16, dim_ffn=128, tm_lora_rank=4, decay_lora_rank=4),
        num_classes=3, num_mel_bins=32, target_frames=48, patch=(8, 8), stride=(8, 8)))
    features = AudioFeatures(FbankConfig(num_mel_bins=32), 48, FeatureStats(-6.0, 3.0))
    return model, features


def test_round_trip_gives_the_same_scores(tmp_path):
    model, features = make(0)
    path = save_tagger(tmp_path / "m.pt", model, features, MIDS, NAMES, step=7)
    loaded, feats2, ckpt = load_tagger(path)
    assert ckpt["step"] == 7 and ckpt["names"] == NAMES and feats2.stats.mean == -6.0
    wave = torch.randn(20000) * 0.1
    torch.testing.assert_close(tag_waveform(loaded, feats2, wave), tag_waveform(model.eval(), features, wave))


def test_not_a_tagger_checkpoint_is_named(tmp_path):
    torch.save({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an AudioRWKV tagger checkpoint"):
        read_tagger_checkpoint(tmp_path / "x.pt")


def test_average_is_the_elementwise_mean(tmp_path):
    paths = []
    for seed in range(3):
        model, features = make(seed)
        paths.append(save_tagger(tmp_path / f"step_{seed}.pt", model, features, MIDS, NAMES, step=seed))
    out = average_checkpoints(paths, tmp_path / "avg.pt")
    sds = [torch.load(p, weights_only=True)["model"] for p in paths]
    avg = torch.load(out, weights_only=True)
    for k in sds[0]:
        torch.testing.assert_close(avg["model"][k], (sds[0][k] + sds[1][k] + sds[2][k]) / 3)
    assert avg["averaged_from"] == [str(p) for p in paths]


def test_average_rejects_mismatched_weights():
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="names differ"):
        average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])


def test_average_and_tag_commands(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    for step in (10, 20, 30):
        model, features = make(step)
        save_tagger(tmp_path / "checkpoints" / f"step_{step:07d}.pt", model, features, MIDS, NAMES, step)
    assert audio_cli("average", "--run-dir", str(tmp_path), "--last", "2") == 0
    out = capsys.readouterr().out
    assert "step_0000020.pt" in out and "step_0000010.pt" not in out
    sf.write(tmp_path / "clip.wav", np.random.default_rng(0).standard_normal((30000, 2)) * 0.1, 22050)
    assert audio_cli("tag", str(tmp_path / "clip.wav"), "--checkpoint", str(tmp_path / "model_avg.pt"),
                     "--top-k", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("clip.wav") and len(lines) == 3 and "(/m/" in lines[1]
    (tmp_path / "bad.wav").write_bytes(b"nope")
    assert audio_cli("tag", str(tmp_path / "bad.wav"), "--checkpoint", str(tmp_path / "model_avg.pt")) == 2


def test_windows_cover_the_clip():
    w = windows(torch.arange(10.0), 4)
    assert w.shape == (3, 4) and w[2].tolist() == [8, 9, 0, 0]
    assert windows(torch.ones(2), 4).shape == (1, 4)


def test_a_tagger_written_before_the_backbone_section_still_loads(tmp_path):
    """Files of the flat AudioRWKVConfig (backbone fields beside the tagger's; dim_ffn 0 = 4·D,
    LoRA ranks 0 = the backbone's defaults) load to the same model."""
    model, features = make(0)
    path = save_tagger(tmp_path / "new.pt", model, features, MIDS, NAMES)
    ckpt = torch.load(path, weights_only=True)
    backbone = ckpt["model_config"].pop("backbone")
    ckpt["model_config"].update(version=backbone["version"], n_layer=1, n_embd=32, head_size=16, dim_ffn=0,
                                tm_lora_rank=4, decay_lora_rank=4)
    torch.save(ckpt, tmp_path / "old.pt")
    old, _, _ = load_tagger(tmp_path / "old.pt")
    assert old.config == model.config and old.config.backbone.dim_ffn == 128
    wave = torch.randn(20000) * 0.1
    torch.testing.assert_close(tag_waveform(old, features, wave), tag_waveform(model.eval(), features, wave))
    assert AudioRWKVConfig.from_dict({"n_embd": 64, "num_classes": 2}).backbone == RWKVConfig(
        version="6", n_layer=12, n_embd=64, head_size=64, dim_ffn=256)
