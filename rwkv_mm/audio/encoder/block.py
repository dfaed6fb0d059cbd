"""AudioRWKV blocks: the backbone's time mix and channel mix, made bidirectional and fed by
Q-Shift instead of the causal token shift.

`AudioBlock` wraps an Eagle, Finch or (GoldFinch's lower layers) Finch-C2 time mix;
`AudioGoldBlock` wraps a GOLD layer attending, without a causal mask, over keys decompressed
from the compressed key cache and values rebuilt from x0 = ln0(patch embeddings).
"""

from __future__ import annotations

import torch
from torch import nn

from rwkv_mm.backbone.channel_mix import ChannelMix
from rwkv_mm.backbone.config import RWKVConfig
from rwkv_mm.backbone.finch_c2 import TimeMixFinchC2
from rwkv_mm.backbone.gold import GoldAttention, rms_norm
from rwkv_mm.backbone.time_mix import TimeMixEagle, TimeMixFinch

from .qshift import q_shift

#: the recurrent time mix of an AudioBlock, by backbone version (GoldFinch: its Finch-C2 layers)
_TIME_MIX = {"5": TimeMixEagle, "6": TimeMixFinch, "goldfinch": TimeMixFinchC2}


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
        self.att = self._time_mix(config, layer_id)
        self.ffn = ChannelMix(config, layer_id)
        self.drop_path = DropPath(drop_path)

    def _time_mix(self, config: RWKVConfig, layer_id: int) -> nn.Module:
        return _TIME_MIX[config.version](config, layer_id, bidirectional=True)

    def _shift(self, h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return q_shift(h, grid, self.shift_distance, self.shift_gamma)

    def _spatial_mix(self, h: torch.Tensor, grid: tuple[int, int], keys: torch.Tensor | None,
                     x0: torch.Tensor | None) -> torch.Tensor:
        """The time-mix branch on normed tokens h [B, N, D] -> [B, N, D] (keys, x0 unused)."""
        out, _, _ = self.att(h, None, None, shifted=self._shift(h, grid))
        return out

    def forward(self, x: torch.Tensor, grid: tuple[int, int], keys: torch.Tensor | None = None,
                x0: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, H·W, D] tokens on grid (H, W). Returns [B, H·W, D]. `keys` (the decompressed
        key cache) and `x0` (ln0 of the patch embeddings), both [B, H·W, D]: GOLD blocks only."""
        x = x + self.drop_path(self._spatial_mix(self.ln1(x), grid, keys, x0))
        h = self.ln2(x)
        out, _ = self.ffn(h, None, shifted=self._shift(h, grid))
        return x + self.drop_path(out)


class AudioGoldBlock(AudioBlock):
    """A GoldFinch GOLD block over a patch grid: non-causal attention whose keys/values (from the
    key cache and x0) and query all lerp toward their Q-Shift neighbours."""

    def _time_mix(self, config: RWKVConfig, layer_id: int) -> nn.Module:
        return GoldAttention(config, layer_id)

    def _spatial_mix(self, h: torch.Tensor, grid: tuple[int, int], keys: torch.Tensor | None,
                     x0: torch.Tensor | None) -> torch.Tensor:
        """GOLD attention of h [B, N, D] over keys and x0 (both [B, N, D]) -> [B, N, D]."""
        if keys is None or x0 is None:
            raise ValueError("AudioGoldBlock needs keys and x0 (the key cache and ln0 of the patches)")
        xo = rms_norm(x0)
        k, v = self.att.mix_keys_values(keys, xo, self._shift(keys, grid), self._shift(xo, grid))
        out, _ = self.att(h, None, k, v, shifted=self._shift(h, grid), causal=False)
        return out
