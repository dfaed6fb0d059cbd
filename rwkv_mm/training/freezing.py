"""Which parameters train: the recipe's `train.freeze` / `train.train_only` patterns, and the
rules a stage adds to them (VisualRWKV stage 1 trains only the projector, whatever the recipe
says)."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

from torch import nn

from rwkv_mm.errors import UserError

from .config import TrainConfig


def apply_freezing(model: nn.Module, freeze: Sequence[str], train_only: Sequence[str]) -> dict[str, int]:
    """Set requires_grad from fnmatch patterns over parameter names. Returns counts.

    A pattern that matches no parameter is an error (a typo would silently train everything)."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in (*freeze, *train_only):
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise UserError(f"freeze/train_only pattern {pattern!r} matches no parameter",
                            where="train.freeze/train.train_only",
                            fix=f"parameter names look like {', '.join(names[:4])}")
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        train = (not train_only or any(fnmatch.fnmatchcase(name, pat) for pat in train_only))
        train = train and not any(fnmatch.fnmatchcase(name, pat) for pat in freeze)
        p.requires_grad_(train)
        counts["trainable" if train else "frozen"] += p.numel()
    return counts


def set_trainable(model: nn.Module, train: TrainConfig) -> dict[str, int]:
    """What trains, as every stage decides it (the Trainer; `rwkv-mm plan` on the meta device):
    `train.state_tuning` gives the model its initial states and `train.peft` its adapters, each
    limiting training to itself, then the freeze/train_only patterns set requires_grad.
    Returns `apply_freezing`'s counts."""
    from .peft_tuning import train_config_with_adapters
    from .state_tuning import prepare_state_tuning

    train = prepare_state_tuning(model, train)  # the initial states train, no weight
    train = train_config_with_adapters(model, train)  # adapters in; only they (+ kept modules) train
    return apply_freezing(model, train.freeze, train.train_only)


def with_stage_rules(train: TrainConfig, freeze: Sequence[str] = (), train_only: Sequence[str] = (),
                     what: str = "this stage") -> TrainConfig:
    """`train` with a stage's own freezing merged in: its `freeze` patterns added to the recipe's,
    and, when the stage trains only `train_only`, the recipe may not ask for more (a UserError
    naming the extra patterns; `what` says what the stage trains, e.g. "stage 1 trains only the
    projector")."""
    out = dataclasses.replace(train, freeze=list(train.freeze), train_only=list(train.train_only))
    if train_only:
        extra = [p for p in train.train_only if p not in train_only]
        if extra:
            raise UserError(f"{what}; train.train_only has {extra}", fix="remove them, or train them in another stage")
        out.train_only = list(train_only)
    out.freeze = list(dict.fromkeys([*train.freeze, *freeze]))
    return out
