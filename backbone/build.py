"""One constructor for every backbone family: what recipes, runners and front ends call.

A front end never names a family's classes: it gets a language model from `build_backbone` (or
a checkpoint), types it as `Backbone` / `BackboneState`, and builds encoders through
`RWKVEncoder` (`encoder.py`). A new family adds its branch here.
"""

from __future__ import annotations

from .config import RWKVConfig
from .goldfinch import GoldFinch, GoldFinchState
from .goose import Goose
from .model import RWKV
from .state import RWKVState

#: A language model of any family, as `build_backbone` and `load_model` return it.
Backbone = RWKV | Goose | GoldFinch
#: The recurrent state of any family's language model (Goose's is an `RWKVState`).
BackboneState = RWKVState | GoldFinchState


def build_backbone(config: RWKVConfig, init_weights: bool = True) -> Backbone:
    """A freshly initialised Eagle / Finch (`RWKV`), Goose or GoldFinch model for `config.version`."""
    if config.is_goldfinch:
        return GoldFinch(config, init_weights=init_weights)
    if config.is_goose:
        return Goose(config, init_weights=init_weights)
    return RWKV(config, init_weights=init_weights)
