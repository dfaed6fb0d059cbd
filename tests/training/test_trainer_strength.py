"""The trainer's optimizer step checked against numbers computed by hand, not against itself.

`test_trainer.py` compares the trainer with the trainer (one batch vs accumulated, killed vs
straight) and checks `param_groups` and `lr_at` in isolation, so a trainer that ignored the groups'
learning-rate scale, skipped L2Wrap or normalised the loss per micro-batch would still pass. Here
one real `train_step` is compared with:
- the gradient of the token-mean cross entropy of the global batch plus RWKV-LM's L2Wrap term
  (1e-4 · max logit / (B·T) on each position's largest logit), differentiated by autograd on a
  copy of the model;
- two AdamW steps written out by hand with the paper's recipe (App. H): β = (0.9, 0.99), weight
  decay only on 2-D Linear/Embedding weights, decay parameters (`time_decay*`) at 2× the learning
  rate, linear warmup.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from rwkv_mm.backbone import RWKVConfig, build_backbone
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.trainer import IGNORE_INDEX, Trainer
from rwkv_test_utils import randomize_

T = 12  # positions per sample


def small_model(version: str = "6", seed: int = 0) -> torch.nn.Module:
    """Finch L1 D32, or GoldFinch L2 D32 (one Finch-C2 + one GOLD layer), random weights."""
    torch.manual_seed(seed)
    n_layer = 2 if version == "goldfinch" else 1
    model = build_backbone(RWKVConfig(version=version, n_layer=n_layer, n_embd=32, vocab_size=40,
                                      head_size=16))
    return randomize_(model, seed)


def dataset(n: int = 16, seed: int = 1) -> list[dict]:
    """Samples with 12, 10, ..., 2 target tokens of 12 positions: micro-batches hold different
    numbers of targets, and a batch's target count is far from its position count B·T."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n):
        seq = torch.randint(0, 40, (T + 1,), generator=g)
        targets = seq[1:].clone()
        targets[: 2 * (i % 6)] = IGNORE_INDEX
        data.append({"input_ids": seq[:-1], "targets": targets})
    return data


class RecordingCollate:
    """Stacks samples and keeps every micro-batch it built."""

    def __init__(self) -> None:
        self.batches: list[dict] = []

    def __call__(self, samples: list[dict]) -> dict:
        batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        self.batches.append(batch)
        return batch


def record_gradients(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """Make the trainer's optimizer keep a copy of every gradient it is about to apply."""
    seen: list[dict[str, torch.Tensor]] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
                     if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return seen


def cfg(**kw) -> TrainConfig:
    # grad_clip far above any norm here: clipping multiplies by exactly 1.0
    base = dict(max_steps=10, batch_size=4, micro_batch_size=2, lr=1e-2, lr_final=1e-3,
                warmup_steps=2, grad_clip=1e6, eval_every=0, log_every=1, save_every=0, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def expected_gradients(model: torch.nn.Module, batch: dict, with_l2wrap: bool) -> dict[str, torch.Tensor]:
    """d/dθ of CE_sum / n_targets over the whole global batch, plus L2Wrap's extra gradient."""
    model = copy.deepcopy(model).train()
    model.zero_grad(set_to_none=True)
    logits, _ = model(batch["input_ids"])  # [B, T, V]
    targets = batch["targets"]
    n_targets = (targets != IGNORE_INDEX).sum()
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum") / n_targets
    if with_l2wrap:  # RWKV-LM: gradient 1e-4 · max / (B·T) at each position's largest logit
        top, idx = logits.detach().max(-1, keepdim=True)
        extra = torch.zeros_like(logits).scatter_(-1, idx, top * 1e-4 / targets.numel())
        loss = loss + (logits * extra).sum()
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def flat(grads: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n].flatten().double() for n in names])


@pytest.mark.parametrize("version", ["6", "goldfinch"])
def test_gradient_is_the_token_mean_cross_entropy_plus_l2wrap(tmp_path, version):
    model = small_model(version)
    before = copy.deepcopy(model)
    collate = RecordingCollate()
    trainer = Trainer(model, cfg(), tmp_path, dataset(), collate, device="cpu")
    seen = record_gradients(trainer)
    trainer.train_step()
    assert len(collate.batches) == 2 and len(seen) == 1  # two micro-batches, one optimizer step
    batch = {k: torch.cat([b[k] for b in collate.batches]) for k in collate.batches[0]}
    counts = [int((b["targets"] != IGNORE_INDEX).sum()) for b in collate.batches]
    assert counts[0] != counts[1] and sum(counts) < 0.8 * batch["targets"].numel()

    names = [n for n, _ in before.named_parameters()]
    got = flat(seen[0], names)
    want = flat(expected_gradients(before, batch, with_l2wrap=True), names)
    without = flat(expected_gradients(before, batch, with_l2wrap=False), names)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    # L2Wrap's share is small next to the cross entropy's: the trainer's gradient must carry it,
    # with the B·T normalisation (not per target token, not per micro-batch)
    l2_part = (want - without).abs().max()
    assert l2_part > 0 and (got - want).abs().max() <= 0.02 * l2_part


def paper_groups(name: str, p: torch.Tensor) -> tuple[float, float]:
    """(learning-rate multiplier, weight decay) of App. H, by hand: decay parameters at 2×, weight
    decay only on 2-D weights of Linear/Embedding modules."""
    if "time_decay" in name:
        return 2.0, 0.0
    if name.rsplit(".", 1)[-1] == "weight" and p.dim() == 2:
        return 1.0, 0.1
    return 1.0, 0.0


@pytest.mark.parametrize("version", ["6", "goldfinch"])
def test_two_steps_are_adamw_with_the_paper_groups_by_hand(tmp_path, version):
    model = small_model(version)
    start = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, cfg(weight_decay=0.1), tmp_path, dataset(), RecordingCollate(), device="cpu")
    seen = record_gradients(trainer)
    trainer.train_step()
    trainer.train_step()
    assert len(seen) == 2

    lrs = [0.5e-2, 1e-2]  # warmup over 2 steps to lr = 1e-2: lr·(step+1)/2
    beta1, beta2, eps = 0.9, 0.99, 1e-8
    wrong = []
    for name, p in model.named_parameters():
        scale, wd = paper_groups(name, p)
        x = start[name]
        m = torch.zeros_like(x)
        v = torch.zeros_like(x)
        for t, (lr, grads) in enumerate(zip(lrs, seen), start=1):
            g = grads[name].double()
            lr = lr * scale
            x = x * (1 - lr * wd)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            x = x - lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps)
        moved = (x - start[name]).abs().max()
        if (p.detach().double() - x).abs().max() > 1e-3 * moved + 1e-9:
            wrong.append(name)
    assert not wrong, f"parameters not updated as the paper's AdamW groups say: {wrong}"
