"""Normalisation statistics of the fbank over a dataset (`rwkv-mm audio stats`)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from rwkv_mm.errors import UserError

from .fbank import FbankConfig, KaldiFbank
from .features import FeatureStats


class StatsAccumulator:
    """Running sum and sum of squares (fp64) of fbank values over the real frames of clips."""

    def __init__(self, cfg: FbankConfig | None = None, device: str | torch.device = "cpu") -> None:
        self.fbank = KaldiFbank(cfg).to(device)
        self.device = torch.device(device)
        self.total = 0.0
        self.total_sq = 0.0
        self.n_values = 0
        self.n_frames = 0
        self.n_clips = 0

    @torch.no_grad()
    def add(self, waves: torch.Tensor, lengths: torch.Tensor | None = None,
            names: list[str] | None = None) -> None:
        """waves [B, L]; lengths [B] real samples per clip (the rest is padding, left out).

        A clip whose fbank is not finite (NaN/Inf samples, or values so large the power
        overflows) raises UserError naming it (`names[i]`, else its position) and adds nothing."""
        cfg = self.fbank.cfg
        feats = self.fbank(waves.to(self.device)).double()  # [B, T, M]
        B, T, M = feats.shape
        if lengths is None:
            frames = torch.full((B,), T)
        else:
            frames = torch.tensor([min(cfg.num_frames(int(n)), T) for n in lengths])
        mask = (torch.arange(T)[None] < frames[:, None]).to(feats.device)  # [B, T]
        finite = (torch.isfinite(feats).all(-1) | ~mask).all(-1)  # [B]
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise UserError("fbank values are not finite (NaN/Inf or overflowing samples)",
                            where=names[i] if names else f"clip {i} of the batch",
                            fix="remove or repair the clip")
        real = feats[mask]  # [n, M]
        self.total += float(real.sum())
        self.total_sq += float(real.square().sum())
        self.n_values += real.numel()
        self.n_frames += int(frames.sum())
        self.n_clips += B

    def result(self, source: str) -> FeatureStats:
        """Pooled mean and (population) standard deviation of every value added."""
        if self.n_values == 0:
            raise UserError("no fbank frames to compute statistics from", where=source,
                            fix="need clips of at least one analysis window with finite samples")
        mean = self.total / self.n_values
        var = max(self.total_sq / self.n_values - mean * mean, 0.0)
        if not (math.isfinite(mean) and math.isfinite(var)):
            raise UserError(f"fbank statistics are not finite (mean {mean}, variance {var}); nothing written",
                            where=source, fix="a clip holds NaN/Inf or overflowing sample values; "
                                              "remove it or limit the clips with --max-clips")
        return FeatureStats(mean=mean, std=var ** 0.5, n_clips=self.n_clips, n_frames=self.n_frames,
                            source=source)


def compute_stats(batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], cfg: FbankConfig | None = None,
                  source: str = "", device: str | torch.device = "cpu") -> FeatureStats:
    """Statistics over (waves [B, L], lengths [B] or None) batches."""
    acc = StatsAccumulator(cfg, device)
    for waves, lengths in batches:
        acc.add(waves, lengths)
    return acc.result(source)
