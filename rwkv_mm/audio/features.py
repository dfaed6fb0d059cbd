"""Waveforms → normalised log-mel patches' input: fbank, fixed frame count, AST normalisation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .fbank import FbankConfig, KaldiFbank

#: AST's AudioSet statistics of the 128-bin Kaldi fbank (DESIGN §7)
AST_MEAN = -4.2677393
AST_STD = 4.5689974


@dataclass(frozen=True)
class FeatureStats:
    """Mean and standard deviation of the un-normalised fbank over a dataset's real frames.

    Features are normalised as AST does: (x - mean) / (2·std). `rwkv-mm audio stats` writes
    these as JSON; a recipe's `features.stats` reads them back.
    """

    mean: float = AST_MEAN
    std: float = AST_STD
    n_clips: int = 0
    n_frames: int = 0
    source: str = "AST AudioSet defaults"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Read a stats JSON; errors name the file and the missing/bad key."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"feature stats file not found: {path} "
                                    "(write one with `rwkv-mm audio stats`)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        for key in ("mean", "std"):
            if not isinstance(data.get(key), (int, float)):
                raise ValueError(f"{path}: key '{key}' must be a number, got {data.get(key)!r}")
        if data["std"] <= 0:
            raise ValueError(f"{path}: std must be positive, got {data['std']}")
        known = {k: data[k] for k in ("mean", "std", "n_clips", "n_frames", "source") if k in data}
        return cls(**known)


class AudioFeatures(nn.Module):
    """waveforms [B, L] → normalised fbank [B, T, M], T = `target_frames` (cropped, or padded
    with 0 — the normalised mean — when the signal is shorter). No learnable parameters."""

    def __init__(self, fbank: FbankConfig | None = None, target_frames: int | None = None,
                 stats: FeatureStats | None = None) -> None:
        super().__init__()
        self.fbank = KaldiFbank(fbank)
        self.target_frames = target_frames
        self.stats = stats or FeatureStats()

    @property
    def cfg(self) -> FbankConfig:
        return self.fbank.cfg

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.fbank(wave)  # [B, T, M]
        x = (x - self.stats.mean) / (2.0 * self.stats.std)
        T = self.target_frames
        if T is not None and x.shape[-2] != T:
            if x.shape[-2] > T:
                x = x[..., :T, :]
            else:
                x = nn.functional.pad(x, (0, 0, 0, T - x.shape[-2]))
        return x
