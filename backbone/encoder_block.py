"""The residual block of bidirectional encoders (AudioRWKV), for Eagle and Finch: the language
model's time mix and channel mix, made non-causal.

x += DropPath(TimeMix(LN1(x))); x += DropPath(ChannelMix(LN2(x))). The time mix reads the whole
sequence through the bidirectional WKV and keeps no state; the "other token" input of every
lerp/ddlerp comes from the encoder's token-shift function (`TokenShift`, e.g. Q-Shift over a
patch grid) instead of the previous token. Parameter names are the language model's (`att.*`,
`ffn.*`). Other families subclass `EncoderBlock` (`goldfinch/encoder.py`); encoders get their
blocks from `RWKVEncoder` (`encoder.py`), never by naming a class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .channel_mix import ChannelMix
from .config import RWKVConfig
from .time_mix import time_mix_class, token_shift

#: An encoder's token shift: shift(x [B, N, D], context) -> [B, N, D], the "other token" input
#: of every lerp in place of the previous token. `context` is whatever the encoder passes with
#: its tokens (AudioRWKV: the patch grid, for Q-Shift).
TokenShift = Callable[[torch.Tensor, Any], torch.Tensor]


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


class EncoderBlock(nn.Module):
    """One bidirectional residual block of an Eagle or Finch encoder.

    Args:
        config: the backbone config (its family picks the time mix).
        layer_id: the block's depth (initialisation schedules).
        shift: the token shift of every lerp; None = the causal token shift from zeros.
        drop_path: stochastic-depth rate of both residual branches.
    """

    def __init__(self, config: RWKVConfig, layer_id: int, shift: TokenShift | None = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.shift = shift
        self.ln1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.ln2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.att = self._time_mix(config, layer_id)
        self.ffn = ChannelMix(config, layer_id)
        self.drop_path = DropPath(drop_path)

    def _time_mix(self, config: RWKVConfig, layer_id: int) -> nn.Module:
        """The bidirectional time mix of this family (subclasses: other families)."""
        if config.version not in ("5", "6"):
            raise ValueError(f"EncoderBlock builds Eagle/Finch blocks, not version {config.version!r}: "
                             "get an encoder's blocks from RWKVEncoder.add_blocks")
        return time_mix_class(config)(config, layer_id, bidirectional=True)

    def _shift(self, h: torch.Tensor, context: Any) -> torch.Tensor:
        """The "other token" input [B, N, D] of h [B, N, D]'s lerps."""
        if self.shift is None:
            return token_shift(h, h.new_zeros(h.shape[0], h.shape[2]))
        return self.shift(h, context)

    def _mix(self, h: torch.Tensor, context: Any, keys: torch.Tensor | None,
             x0: torch.Tensor | None) -> torch.Tensor:
        """The time-mix branch on normed tokens h [B, N, D] -> [B, N, D] (keys, x0 unused)."""
        out, _, _ = self.att(h, None, None, shifted=self._shift(h, context))
        return out

    def forward(self, x: torch.Tensor, context: Any = None, keys: torch.Tensor | None = None,
                x0: torch.Tensor | None = None) -> torch.Tensor:
        """x: tokens [B, N, D]; `context` goes to the token shift (AudioRWKV: the grid).
        `keys` (GoldFinch's decompressed key cache) and `x0` (ln0 of the encoder's input), both
        [B, N, D], are read by GOLD blocks only. Returns [B, N, D]."""
        x = x + self.drop_path(self._mix(self.ln1(x), context, keys, x0))
        h = self.ln2(x)
        out, _ = self.ffn(h, None, shifted=self._shift(h, context))
        return x + self.drop_path(out)
