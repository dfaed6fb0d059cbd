"""`rwkv-mm plan` sizes parameter-efficient runs as the Trainer trains them: with train.peft the
adapters (and only they) are trainable, with train.state_tuning only the initial states."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import build_backbone
from rwkv_mm.planning import estimate
from rwkv_mm.recipe import load_recipe

TINY = ["init_from=null", "backbone.n_layer=2", "backbone.n_embd=64", "backbone.head_size=16"]


def _trainable_as_the_trainer_sees_it(recipe, run_dir) -> tuple[int, int]:
    """Parameter counts of the model the Trainer itself trains (a real model, not the meta one)."""
    from rwkv_mm.training.trainer import Trainer

    model = build_backbone(recipe.config.backbone)
    sample = {"input_ids": torch.zeros(8, dtype=torch.long), "targets": torch.zeros(8, dtype=torch.long)}
    trainer = Trainer(model, recipe.config.train, run_dir, [sample], lambda b: b[0], device="cpu")
    params = list(trainer.model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@pytest.mark.parametrize("overrides", [["train.peft.r=4"], ["train.peft.method=dora", "train.peft.r=4"],
                                       ["train.peft.method=pissa", "train.peft.r=4"],
                                       ["train.state_tuning=true"], []])
def test_plan_counts_what_the_trainer_trains(tmp_path, monkeypatch, overrides):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    total, trainable = _trainable_as_the_trainer_sees_it(load_recipe("music/abc_tiny", [*TINY, *overrides]),
                                                         tmp_path / "run")
    plan = estimate(load_recipe("music/abc_tiny", [*TINY, *overrides]), device="cpu")
    assert (plan.params.total, plan.params.trainable) == (total, trainable)
    if overrides:
        assert trainable < total / 2
