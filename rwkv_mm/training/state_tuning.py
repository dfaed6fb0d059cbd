"""State tuning (`train.state_tuning`, RWKV-PEFT's "state" training): every weight frozen, each
language model's learned initial state — per layer the WKV state [H, N, N] and, with
`train.state_tuning_shift`, the two token-shift vectors [D] — the only thing that trains (beside
what `train.train_only` names, e.g. VisualRWKV's projector).

The trainer calls `prepare_state_tuning` (in `freezing.set_trainable`) before the freezing, so
every runner gets it: the states are parameters of the blocks (`blocks.{i}.att.time_state`,
...), so they are sharded with their block under FSDP, synchronised by DDP, saved in the training checkpoint and resumed;
AdamW trains them without weight decay (they are neither matrices nor decay parameters, see
`rwkv_mm.backbone.param_groups`). The exported model file carries them in the layout BlinkDL's
runtime reads, and `write_state_file` writes them alone (`state.pth`) beside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from rwkv_mm.backbone import RWKV, GoldFinch, Goose, add_initial_state, has_initial_state, save_tuned_state
from rwkv_mm.errors import UserError

from .config import TrainConfig

#: fnmatch patterns of the learned-state parameters (`train_only` gets them)
STATE_PATTERNS = ("*att.time_state",)
SHIFT_PATTERNS = ("*att.shift_state", "*ffn.shift_state")
#: where the run folder's state file goes, beside the model
STATE_FILE = "state.pth"


def language_models(model: nn.Module) -> list[nn.Module]:
    """The language models (any backbone family) inside `model`, the model itself included."""
    return [m for m in model.modules() if isinstance(m, (RWKV, Goose, GoldFinch))]


def prepare_state_tuning(model: nn.Module, cfg: TrainConfig) -> TrainConfig:
    """`cfg` unchanged without `state_tuning`. With it: give every language model in `model` a
    learned initial state (zeros, or the one it was loaded with) and return `cfg` whose
    `train_only` is the states' patterns plus the recipe's own (so everything else is frozen).

    UserError, naming `train.state_tuning`, for a model with no language model (an encoder
    keeps no state between sequences) or of a family whose state cannot be tuned (Goose,
    GoldFinch)."""
    if not cfg.state_tuning:
        return cfg
    models = language_models(model)
    if not models:
        raise UserError(f"{type(model).__name__} holds no language model whose initial state could be "
                        "tuned (encoders keep no state between sequences)", where="train.state_tuning",
                        fix="set train.state_tuning: false (or use train.peft)")
    for lm in models:
        add_initial_state(lm, shift=cfg.state_tuning_shift, where="train.state_tuning")
    patterns = [*STATE_PATTERNS, *(SHIFT_PATTERNS if cfg.state_tuning_shift else ())]
    return dataclasses.replace(cfg, train_only=list(dict.fromkeys([*patterns, *cfg.train_only])))


def write_state_file(lm: nn.Module, path: str | Path) -> dict[str, str]:
    """Write a language model's learned initial state alone (`state.pth`) when it holds one;
    returns {"state": path} for the run's summary ({} when it has none)."""
    if not has_initial_state(lm):
        return {}
    return {"state": str(save_tuned_state(lm, path))}
