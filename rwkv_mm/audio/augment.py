"""Training-time augmentation: SpecAugment masks and mixup, batched, on any device.

Randomness comes from torch's global generator (SpecAugment also takes one); the trainer seeds it and
saves it in checkpoints, so augmented runs are reproducible and resume exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from rwkv_mm.errors import check_choice, check_float, check_int


@dataclass
class AugmentConfig:
    """SpecAugment and mixup settings (AST's AudioSet values by default).

    Attributes:
        freq_mask, time_mask: maximum widths (bins / frames) of each mask; 0 = off.
        n_freq_masks, n_time_masks: masks of each kind per clip.
        mixup: probability that a clip is mixed with another clip of the batch; 0 = off.
        mixup_alpha: λ ~ Beta(α, α) (AST: 10, so λ stays near 0.5).
        mixup_on: mix the waveforms (as AST) or the normalised fbank.
    """

    freq_mask: int = 48
    time_mask: int = 192
    n_freq_masks: int = 1
    n_time_masks: int = 1
    mixup: float = 0.5
    mixup_alpha: float = 10.0
    mixup_on: Literal["waveform", "fbank"] = "waveform"

    def __post_init__(self) -> None:
        for name in ("freq_mask", "time_mask", "n_freq_masks", "n_time_masks"):
            check_int(self, name, min=0)
        check_float(self, "mixup", min=0.0, max=1.0)
        check_float(self, "mixup_alpha", gt=0.0)
        check_choice(self, "mixup_on", ("waveform", "fbank"))


def _band_masks(B: int, size: int, max_width: int, count: int, device,
                generator: torch.Generator | None) -> torch.Tensor:
    """[B, size] bool: `count` bands per row, each of width ⌊U·max_width⌋ starting at
    ⌊U·(size - width)⌋ (torchaudio's masking rule, drawn per clip)."""
    pos = torch.arange(size, device=device)
    mask = torch.zeros(B, size, dtype=torch.bool, device=device)
    for _ in range(count):
        width = (torch.rand(B, generator=generator) * min(max_width, size)).floor()
        start = (torch.rand(B, generator=generator) * (size - width)).floor()
        width, start = width.to(device), start.to(device)
        mask |= (pos[None] >= start[:, None]) & (pos[None] < (start + width)[:, None])
    return mask


def spec_augment(x: torch.Tensor, freq_mask: int, time_mask: int, n_freq_masks: int = 1,
                 n_time_masks: int = 1, fill: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Frequency and time masking of features x [B, T, F], independently per clip.

    Masked values become `fill` (0 = the mean of normalised features). Returns a new tensor.
    """
    B, T, F = x.shape
    out = x
    if freq_mask > 0 and n_freq_masks > 0:
        m = _band_masks(B, F, freq_mask, n_freq_masks, x.device, generator)  # [B, F]
        out = out.masked_fill(m[:, None, :], fill)
    if time_mask > 0 and n_time_masks > 0:
        m = _band_masks(B, T, time_mask, n_time_masks, x.device, generator)  # [B, T]
        out = out.masked_fill(m[:, :, None], fill)
    return out


def mixup(x: torch.Tensor, y: torch.Tensor, prob: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip, with probability `prob`, with another clip of the batch.

    x: [B, ...] inputs (waveforms or features), y: [B, C] targets. A mixed clip i becomes
    λ·x_i + (1-λ)·x_j and its targets λ·y_i + (1-λ)·y_j, with j a random other clip and
    λ ~ Beta(alpha, alpha) drawn per clip (torch's global generator). Returns new (x, y);
    with B < 2 or prob 0 the inputs themselves.
    """
    B = x.shape[0]
    if B < 2 or prob <= 0:
        return x, y
    partner = (torch.arange(B) + torch.randint(1, B, (B,))) % B  # never itself
    lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((B,))  # [B]
    use = torch.rand(B) < prob
    lam = torch.where(use, lam, torch.ones(B)).to(device=x.device, dtype=torch.float32)  # [B]
    partner = partner.to(x.device)
    lx = lam.view(B, *([1] * (x.dim() - 1))).to(x.dtype)
    ly = lam.view(B, 1).to(y.dtype)
    return lx * x + (1 - lx) * x[partner], ly * y + (1 - ly) * y[partner]
