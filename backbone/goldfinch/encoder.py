"""GoldFinch's blocks in a bidirectional encoder (AudioRWKV with `version: goldfinch`).

Below: Finch-C2 blocks, their WKV read in both directions. After them the encoder writes the key
cache once (`key_cache.cache_keys`, with x0 = ln0 of the encoder's input in place of token
embeddings). On top: GOLD blocks attending over those keys (values from x0) without a causal
mask. Every lerp, the GOLD keys' and values' included, reads the encoder's token shift.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import RWKVConfig
from ..encoder_block import EncoderBlock
from .finch_c2 import TimeMixFinchC2
from .gold import GoldAttention, rms_norm


class FinchC2EncoderBlock(EncoderBlock):
    """A lower GoldFinch layer in an encoder: the Finch-C2 time mix over the bidirectional WKV."""

    def _time_mix(self, config: RWKVConfig, layer_id: int) -> nn.Module:
        return TimeMixFinchC2(config, layer_id, bidirectional=True)


class GoldEncoderBlock(EncoderBlock):
    """An upper GoldFinch layer in an encoder: non-causal GOLD attention whose keys/values (from
    the key cache and x0) and query all lerp toward their token-shift neighbours."""

    def _time_mix(self, config: RWKVConfig, layer_id: int) -> nn.Module:
        return GoldAttention(config, layer_id)

    def _mix(self, h: torch.Tensor, context: Any, keys: torch.Tensor | None,
             x0: torch.Tensor | None) -> torch.Tensor:
        """GOLD attention of h [B, N, D] over keys and x0 (both [B, N, D]) -> [B, N, D]."""
        if keys is None or x0 is None:
            raise ValueError("a GOLD encoder block needs keys and x0 (the key cache and ln0 of the input)")
        xo = rms_norm(x0)
        k, v = self.att.mix_keys_values(keys, xo, self._shift(keys, context), self._shift(xo, context))
        out, _ = self.att(h, None, k, v, shifted=self._shift(h, context), causal=False)
        return out


def goldfinch_encoder_block(config: RWKVConfig, layer_id: int, **options: Any) -> EncoderBlock:
    """Block `layer_id` of a GoldFinch encoder: Finch-C2 below `first_gold_layer`, GOLD from it."""
    kind = GoldEncoderBlock if layer_id >= config.first_gold_layer else FinchC2EncoderBlock
    return kind(config, layer_id, **options)
