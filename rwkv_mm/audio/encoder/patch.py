"""Patch embedding of a (time × frequency) fbank image, with a learned 2-D position table."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def grid_size(frames: int, mels: int, patch: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """(time, frequency) patches of a [frames, mels] input: ⌊(n - p)/s⌋ + 1 each way."""
    if frames < patch[0] or mels < patch[1]:
        raise ValueError(f"input [{frames} frames, {mels} mel bins] is smaller than one patch {patch}")
    return (frames - patch[0]) // stride[0] + 1, (mels - patch[1]) // stride[1] + 1


class PatchEmbed(nn.Module):
    """fbank [B, T, F] → tokens [B, H·W, D] (time-major: all frequency patches of the first time
    step, then the next) and the grid (H, W). Patches p_t × p_f every s_t × s_f (overlap when
    s < p, as AST's stride 10). The position table is learned for the training grid and
    interpolated bilinearly along time (and frequency) for other input sizes."""

    def __init__(self, dim: int, frames: int, mels: int, patch: tuple[int, int] = (16, 16),
                 stride: tuple[int, int] = (16, 16)) -> None:
        super().__init__()
        self.patch, self.stride = tuple(patch), tuple(stride)
        self.grid = grid_size(frames, mels, self.patch, self.stride)
        self.proj = nn.Conv2d(1, dim, kernel_size=self.patch, stride=self.stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, *self.grid, dim))  # [1, H, W, D]
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        B, T, Fm = x.shape
        grid = grid_size(T, Fm, self.patch, self.stride)
        tokens = self.proj(x.unsqueeze(1))  # [B, D, H, W]
        pos = self.pos_embed
        if grid != self.grid:
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=grid, mode="bilinear",
                                align_corners=False).permute(0, 2, 3, 1)  # [1, H, W, D]
        tokens = tokens.permute(0, 2, 3, 1) + pos  # [B, H, W, D]
        return tokens.flatten(1, 2), grid
