"""Normalisation: AST defaults, stats files, `compute_stats` against a direct computation."""

from __future__ import annotations

import json

import pytest
import torch

from rwkv_mm.audio.fbank import FbankConfig, reference_fbank
from rwkv_mm.audio.features import AST_MEAN, AST_STD, AudioFeatures, FeatureStats
from rwkv_mm.audio.stats import compute_stats


def test_ast_normalisation_crop_and_pad():
    cfg = FbankConfig(num_mel_bins=32)
    wave = torch.randn(2, 8000) * 0.1
    raw = torch.stack([reference_fbank(w, cfg) for w in wave])  # [2, 48, 32]
    feats = AudioFeatures(cfg, target_frames=None)
    torch.testing.assert_close(feats(wave), (raw - AST_MEAN) / (2 * AST_STD), rtol=0, atol=1e-4)
    cropped = AudioFeatures(cfg, target_frames=40)(wave)
    padded = AudioFeatures(cfg, target_frames=60)(wave)
    assert cropped.shape == (2, 40, 32) and padded.shape == (2, 60, 32)
    assert torch.all(padded[:, 48:] == 0)  # padding is the normalised mean


def test_stats_match_direct_mean_and_std_over_real_frames():
    cfg = FbankConfig(num_mel_bins=24)
    g = torch.Generator().manual_seed(1)
    waves = torch.randn(3, 6000, generator=g) * torch.tensor([[0.01], [0.1], [1.0]])
    lengths = torch.tensor([6000, 3000, 1000])
    waves[1, 3000:] = 0
    waves[2, 1000:] = 0
    stats = compute_stats([(waves[:2], lengths[:2]), (waves[2:], lengths[2:])], cfg, source="test")
    real = torch.cat([reference_fbank(w[:n], cfg) for w, n in zip(waves, lengths)]).double()
    assert stats.n_clips == 3 and stats.n_frames == real.shape[0]
    assert abs(stats.mean - real.mean().item()) < 1e-6
    assert abs(stats.std - real.std(unbiased=False).item()) < 1e-5


def test_stats_file_round_trip_and_errors(tmp_path):
    path = FeatureStats(-5.0, 3.0, 10, 1000, "x").save(tmp_path / "s.json")
    assert FeatureStats.load(path) == FeatureStats(-5.0, 3.0, 10, 1000, "x")
    (tmp_path / "bad.json").write_text(json.dumps({"mean": -5.0, "std": 0}))
    with pytest.raises(ValueError, match="std must be positive"):
        FeatureStats.load(tmp_path / "bad.json")
    (tmp_path / "nokey.json").write_text(json.dumps({"mean": -5.0}))
    with pytest.raises(ValueError, match="'std'"):
        FeatureStats.load(tmp_path / "nokey.json")
    with pytest.raises(FileNotFoundError, match="rwkv-mm audio stats"):
        FeatureStats.load(tmp_path / "missing.json")
