"""Shared pieces of the train.peft tests: tiny models with random weights, a few trainer steps,
and the logits a model gives."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.peft_config import PeftConfig
from rwkv_mm.training.trainer import Trainer
from rwkv_test_utils import tiny_model

sys.path.append(str(Path(__file__).resolve().parents[1] / "backbone"))  # the Goose tests' helpers
from test_goose_utils import tiny_goose  # noqa: E402

V = 97


def tiny(version: str = "6", seed: int = 0, n_layer: int = 2, **kw) -> nn.Module:
    """A randomly weighted L2 D64 model of any family (fp32, eval mode)."""
    if version == "7":
        return tiny_goose(n_layer=n_layer, n_embd=64, head_size=16, vocab_size=V, seed=seed, **kw)
    return tiny_model(version, n_layer=n_layer, n_embd=64, head_size=16, vocab_size=V, seed=seed, **kw)


def tokens(batch: int = 2, T: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (batch, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 logits [B, T, V] of `model` (eval mode) on `x` (default: `tokens()`)."""
    model.eval()
    return model(tokens() if x is None else x)[0].float()


def dataset(n: int = 16, T: int = 12, seed: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        seq = torch.randint(0, V, (T + 1,), generator=g)
        out.append({"input_ids": seq[:-1], "targets": seq[1:]})
    return out


def collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def train_config(peft: PeftConfig | None = None, **kw) -> TrainConfig:
    base = dict(max_steps=4, batch_size=4, micro_batch_size=2, lr=2e-2, lr_final=1e-3, warmup_steps=0,
                save_every=2, eval_every=0, log_every=1, seed=3, loggers=["jsonl"],
                peft=peft if peft is not None else PeftConfig())
    base.update(kw)
    return TrainConfig(**base)


def fit(model: nn.Module, cfg: TrainConfig, run_dir, resume: bool = False, on_step=None) -> tuple[list[float], Trainer]:
    """Train `model` with `cfg` on `dataset()`; (losses, trainer)."""
    losses: list[float] = []

    def record(trainer, metrics):
        losses.append(metrics["loss"])
        if on_step:
            on_step(trainer, metrics)

    trainer = Trainer(model, cfg, run_dir, dataset(), collate, device="cpu")
    trainer.fit(resume=resume, on_step=record)
    return losses, trainer
