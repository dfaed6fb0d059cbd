"""The `backbone:` section every recipe has (the backbone's own `RWKVConfig`) and the weights
named beside it.

    backbone: {version: "5", n_layer: 4, n_embd: 128, head_size: 32}   # RWKVConfig, every field
    backbone_weights: models/RWKV-5-World-1B5.pth                     # (or init_from) optional

Without weights the backbone is built fresh from the section. With weights, the section must
describe them: each field the weights fix (everything but the runtime settings
`head_size_divisor`, `layer_norm_eps`, `rope_base`) is compared, and a difference is an error
naming `backbone.<field>` and the file's value. `backbone: null` takes the shape from the weights.
"""

from __future__ import annotations

import dataclasses

import torch

from rwkv_mm.backbone import (Backbone, RWKVConfig, build_backbone, config_from_state_dict, load_model,
                              read_state_dict, state_dict_to_model)
from rwkv_mm.errors import ConfigError, UserError

#: RWKVConfig fields the tensors do not fix: a recipe's value is used as it is.
RUNTIME_FIELDS = ("head_size_divisor", "layer_norm_eps", "rope_base")


def require_shape(section: RWKVConfig | None, **weights: str | None) -> None:
    """ConfigError on `backbone` when it is null and none of `weights` (recipe key -> path) is
    set: nothing would say the backbone's shape. Call it from a run config's `__post_init__`."""
    if section is None and not any(weights.values()):
        keys = " or ".join(weights)
        raise ConfigError("backbone", None, f"a backbone section (null takes the shape from the "
                                            f"weights, and {keys} is not set)")


def check_backbone(section: RWKVConfig | None, actual: RWKVConfig, source: str,
                   ignore: tuple[str, ...] = ()) -> None:
    """UserError naming every `backbone.<field>` of the recipe's section that differs from the
    backbone `source` holds (`actual`), but the `ignore`d fields (e.g. an encoder's unused
    `vocab_size`); nothing to check when the section is null."""
    if section is None:
        return
    unused = ("tm_lora_rank", "decay_lora_rank") if actual.version == "5" else ()  # Eagle has no LoRAs
    skip = (*RUNTIME_FIELDS, *unused, *ignore)
    wrong = [(f.name, getattr(section, f.name), getattr(actual, f.name)) for f in dataclasses.fields(RWKVConfig)
             if f.name not in skip and getattr(section, f.name) != getattr(actual, f.name)]
    if wrong:
        listed = ", ".join(f"backbone.{k}={mine!r} (the weights: {theirs!r})" for k, mine, theirs in wrong)
        fix = " ".join(f"backbone.{k}={theirs}" for k, _, theirs in wrong)
        raise UserError(f"the recipe's backbone is not the one in the weights: {listed}", where=source,
                        fix=f"set {fix}, or backbone: null to take the shape from the weights")


def backbone_from(section: RWKVConfig | None, weights: str | None, seed: int) -> Backbone:
    """The language model a recipe asks for: a fresh one of `section` (seeded with `seed`), or
    the `weights` file (.pth/.safetensors) loaded into the section's shape (checked first,
    `check_backbone`), or with its own shape when `section` is None."""
    if not weights:
        if section is None:
            raise ConfigError("backbone", None, "a backbone section when no weights are given")
        torch.manual_seed(seed)
        return build_backbone(section)
    if section is None:
        return load_model(weights)
    sd = read_state_dict(weights)
    check_backbone(section, config_from_state_dict(sd, source=str(weights)), str(weights))
    return state_dict_to_model(sd, section, source=str(weights))
