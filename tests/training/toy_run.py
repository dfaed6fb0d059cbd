"""A tiny real training for trainer and command-line tests: a Finch L1 D32 model on random
tokens (a few steps take well under a second), and the `toy_trainer` runner that trains it from
a recipe, so `rwkv-mm train` runs the real trainer, checkpoints and metrics.

    from training.toy_run import toy_recipe  # fixture: registers the runner, writes toy.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from rwkv_mm.backbone import RWKV, GoldFinch, RWKVConfig, build_backbone
from rwkv_mm.runners import register_runner, unregister_runner
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.trainer import IGNORE_INDEX, Trainer, lm_loss
from rwkv_test_utils import single_threaded

RUNNER = "toy_trainer"


def make_model(seed: int = 0, version: str = "6", n_embd: int = 32) -> RWKV | GoldFinch:
    """Finch L1 D32 (head size 16), or GoldFinch L2 D32 (1 Finch-C2 + 1 GOLD layer)."""
    torch.manual_seed(seed)
    n_layer = 2 if version == "goldfinch" else 1
    return build_backbone(RWKVConfig(version=version, n_layer=n_layer, n_embd=n_embd, vocab_size=40,
                                     head_size=16))


def make_dataset(n: int = 24, T: int = 12, seed: int = 1) -> list[dict]:
    """Random token sequences; sample i has its first i % 3 targets ignored."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n):
        seq = torch.randint(4, 40, (T + 1,), generator=g)
        targets = seq[1:].clone()
        targets[: i % 3] = IGNORE_INDEX  # varying numbers of target tokens per sample
        data.append({"input_ids": seq[:-1], "targets": targets})
    return data


def collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


TOY_TRAIN = dict(max_steps=4, batch_size=4, micro_batch_size=2, lr=2e-2, lr_final=1e-3, warmup_steps=1,
                 eval_every=0, save_every=2, log_every=1, seed=3)


def _toy_train() -> TrainConfig:
    return TrainConfig(**TOY_TRAIN)


@dataclass
class ToyRunConfig:
    """`n_embd`: model width; `nan_weights`: start from weights with a NaN (like an `init_from`
    file holding one); `nan_steps`: steps (1-based) whose loss is made NaN."""

    n_embd: int = 32
    n_samples: int = 24
    nan_weights: bool = False
    nan_steps: list[int] = field(default_factory=list)
    train: TrainConfig = field(default_factory=_toy_train)


def run(cfg: ToyRunConfig, run_dir: Path, resume: bool) -> dict:
    model = make_model(n_embd=cfg.n_embd)
    if cfg.nan_weights:
        with torch.no_grad():
            model.head.weight[0, 0] = float("nan")
    trainer: list[Trainer] = []

    def loss_fn(m, batch):
        loss_sum, n_tokens, logits = lm_loss(m, batch)
        if trainer[0].step + 1 in cfg.nan_steps:
            loss_sum = loss_sum * float("nan")
        return loss_sum, n_tokens, logits

    trainer.append(Trainer(model, cfg.train, run_dir, make_dataset(cfg.n_samples), collate,
                           loss_fn=loss_fn, device="cpu"))
    return trainer[0].fit(resume=resume)


def register() -> None:
    """Register the `toy_trainer` runner (also used by child processes of kill tests)."""
    register_runner(RUNNER, config=ToyRunConfig, description="tests: tiny real training")(run)


def write_recipe(folder: Path, name: str = "toy.yaml", **tree) -> Path:
    """A recipe for the toy runner: its `train:` section spelled out (overrides of single keys
    keep the others), plus `tree` (e.g. nan_steps=[2])."""
    path = Path(folder) / name
    path.write_text(yaml.safe_dump({"runner": RUNNER, "train": dict(TOY_TRAIN), **tree}))
    return path


@pytest.fixture()
def toy_recipe(tmp_path) -> Path:
    """The toy runner registered, and `tmp_path/toy.yaml` naming it (torch on one thread: a tiny
    model only waits for other threads on a busy machine)."""
    register()
    with single_threaded():
        yield write_recipe(tmp_path)
    unregister_runner(RUNNER)
