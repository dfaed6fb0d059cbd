"""An AudioRWKV block: the backbone's Eagle/Finch time mix and channel mix, made bidirectional
and fed by Q-Shift instead of the causal token shift."""

from __future__ import annotations

import torch
from torch import nn

from rwkv_mm.backbone.channel_mix import ChannelMix
from rwkv_mm.backbone.config import RWKVConfig
from rwkv_mm.backbone.time_mix import TimeMixEagle, TimeMixFinch

from .qshift import q_shift


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability p (train only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, ...]
        if self.p <= 0.0 or not self.training:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class AudioBlock(nn.Module):
    """x += SpatialMix(LN1(x)); x += ChannelMix(LN2(x)), both reading Q-Shift(LN(x)) as the
    neighbour input of their lerp/ddlerp, the spatial mix through the bidirectional WKV.
    Parameter names are the backbone's (`att.*`, `ffn.*`)."""

    def __init__(self, config: RWKVConfig, layer_id: int, shift_distance: int = 1,
                 shift_gamma: float = 0.25, drop_path: float = 0.0) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.shift_distance, self.shift_gamma = shift_distance, shift_gamma
        self.ln1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.ln2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        time_mix = TimeMixFinch if config.version == "6" else TimeMixEagle
        self.att = time_mix(config, layer_id, bidirectional=True)
        self.ffn = ChannelMix(config, layer_id)
        self.drop_path = DropPath(drop_path)

    def _shift(self, h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return q_shift(h, grid, self.shift_distance, self.shift_gamma)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x: [B, H·W, D] tokens on grid (H, W). Returns [B, H·W, D]."""
        h = self.ln1(x)
        out, _, _ = self.att(h, None, None, shifted=self._shift(h, grid))
        x = x + self.drop_path(out)
        h = self.ln2(x)
        out, _ = self.ffn(h, None, shifted=self._shift(h, grid))
        return x + self.drop_path(out)
