"""One constructor for every backbone version: what recipes and runners call."""

from __future__ import annotations

from .config import RWKVConfig
from .goldfinch import GoldFinch
from .model import RWKV


def build_backbone(config: RWKVConfig, init_weights: bool = True) -> RWKV | GoldFinch:
    """A freshly initialised Eagle / Finch (`RWKV`) or GoldFinch model for `config.version`."""
    if config.is_goldfinch:
        return GoldFinch(config, init_weights=init_weights)
    return RWKV(config, init_weights=init_weights)
