"""GoldFinch's compressed key cache ("TokenCat", paper §3.3), built here once for the language
model (`model.py`) and for encoders (`backbone/encoder.py`).

After the last Finch-C2 layer, every position t is compressed and later decompressed into the
key that all GOLD layers attend over:

    c_t = W_a h_t                          (D -> Dc = key_cache_dim, D/16 by default; cached)
    key_t = rms_norm(W_b [x0_t; c_t])      (x0_t = ln0 of the position's embedding)

Both matrices sit on the module that owns the blocks, under the GoldFinch code's state-dict names
`w_kv_cache_a` (W_a) and `w_kv_cache_b` (W_b).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import RWKVConfig
from ..linear import Linear
from .gold import rms_norm


def add_key_cache(owner: nn.Module, config: RWKVConfig) -> None:
    """Register W_a (D -> Dc) and W_b (D + Dc -> D) on `owner` as `w_kv_cache_a`/`w_kv_cache_b`."""
    D, Dc = config.n_embd, config.key_cache_dim
    owner.w_kv_cache_a = Linear(D, Dc, bias=False)  # compress: D -> D/16
    owner.w_kv_cache_b = Linear(D + Dc, D, bias=False)  # TokenCat -> key


def decompress_keys(owner: nn.Module, x0: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
    """TokenCat: keys [B, T, D] = rms_norm(W_b [x0; c]) from x0 [B, T, D] and the compressed key
    cache c [B, T, Dc]."""
    return rms_norm(owner.w_kv_cache_b(torch.cat((x0, compressed), dim=-1)))


def cache_keys(owner: nn.Module, x0: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Keys [B, T, D] of positions whose last Finch-C2 output is h [B, T, D]: compressed with W_a,
    then decompressed with their x0 [B, T, D]."""
    return decompress_keys(owner, x0, owner.w_kv_cache_a(h))
