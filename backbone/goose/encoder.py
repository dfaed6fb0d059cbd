"""Goose's blocks in a bidirectional encoder (AudioRWKV with `version: "7"`).

x += DropPath(TimeMix(LN1(x))); x += DropPath(ChannelMix(LN2(x))), with the x070 time mix made
non-causal (`time_mix.wkv7_bidirectional`: forward scan + reversed scan over the same op, the
current token's write counted once) and every lerp fed by the encoder's token shift. As in the
language model, block 0's values are the v_first that every later block's value residual reads
(per position, so the encoder's run loop hands it from block to block: `RWKVEncoder.run_blocks`).
Parameter names are the language model's (`att.*`, `ffn.*`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import RWKVConfig
from ..encoder_block import DropPath, TokenShift
from ..time_mix import token_shift
from .channel_mix import ChannelMixGoose
from .time_mix import TimeMixGoose


class GooseEncoderBlock(nn.Module):
    """One bidirectional Goose block (see the module docstring).

    Args:
        config: the backbone config (version "7").
        layer_id: the block's depth (block 0 produces v_first; initialisation schedules).
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
        self.att = TimeMixGoose(config, layer_id, bidirectional=True)
        self.ffn = ChannelMixGoose(config, layer_id)
        self.drop_path = DropPath(drop_path)

    def _shift(self, h: torch.Tensor, context: Any) -> torch.Tensor:
        """The "other token" input [B, N, D] of h [B, N, D]'s lerps."""
        if self.shift is None:
            return token_shift(h, h.new_zeros(h.shape[0], h.shape[2]))
        return self.shift(h, context)

    def forward(self, x: torch.Tensor, context: Any = None,
                v_first: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: tokens [B, N, D]; `context` goes to the token shift (AudioRWKV: the grid); v_first
        [B, N, D] from block 0 (None for block 0 itself). Returns (x [B, N, D], v_first)."""
        h = self.ln1(x)
        out, _, _, v_first = self.att(h, None, None, v_first, shifted=self._shift(h, context))
        x = x + self.drop_path(out)
        h = self.ln2(x)
        out, _ = self.ffn(h, None, shifted=self._shift(h, context))
        return x + self.drop_path(out), v_first
