"""Waveforms → normalised log-mel patches' input: fbank, fixed frame count, AST normalisation."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from rwkv_mm.backbone import atomic_write
from rwkv_mm.errors import UserError

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
        """Write the stats as JSON (atomically); non-finite values are refused, never written."""
        for key in ("mean", "std"):
            if not math.isfinite(getattr(self, key)):
                raise UserError(f"fbank statistics {key}={getattr(self, key)} are not finite; nothing written",
                                where=str(path), fix=f"check the clips of {self.source}")
        text = json.dumps(asdict(self), indent=2, allow_nan=False) + "\n"
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Read a stats JSON; errors name the file and the missing/bad key."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"feature stats file not found: {path} "
                                    "(write one with `rwkv-mm audio stats`)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"not valid JSON ({err})", where=str(path)) from None
        if not isinstance(data, dict):
            raise UserError("expected a JSON object with 'mean' and 'std'", where=str(path))
        for key in ("mean", "std"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"key '{key}' must be a finite number, got {value!r}", where=str(path))
        if data["std"] <= 0:
            raise UserError(f"std must be positive, got {data['std']}", where=str(path))
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
