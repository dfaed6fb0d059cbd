"""Optimizer parameter groups of the paper's training recipe (Appendix H, RWKV-LM's trainer)."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, lr: float, weight_decay: float = 1e-3,
                 decay_lr_scale: float = 2.0) -> list[dict]:
    """Split trainable parameters into AdamW groups.

    - decay parameters (names containing `time_decay`: ω and, for Finch, its LoRA; Goose's decay
      base `att.w0`, as RWKV-LM's x070 trainer does) train at `decay_lr_scale`× the learning
      rate, without weight decay;
    - 2-D weights of Linear and Embedding modules get `weight_decay`;
    - everything else (norms, μ, bonus u, LoRA of the token shift) trains at 1× without decay.

    Each group carries `lr_scale`, so a scheduler sets `group["lr"] = base_lr * group["lr_scale"]`.
    Frozen parameters (requires_grad=False) are left out; empty groups are dropped.
    """
    matrix_ids = {id(m.weight) for m in model.modules()
                  if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.dim() == 2}
    decay_fast, with_wd, plain = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "time_decay" in name or name.endswith("att.w0"):
            decay_fast.append(p)
        elif id(p) in matrix_ids and weight_decay > 0:
            with_wd.append(p)
        else:
            plain.append(p)
    groups = [
        {"name": "weights_wd", "params": with_wd, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"name": "decay_2x", "params": decay_fast, "weight_decay": 0.0, "lr_scale": decay_lr_scale},
        {"name": "other_1x", "params": plain, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return groups


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 1e-3,
                   betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                   decay_lr_scale: float = 2.0) -> torch.optim.AdamW:
    """AdamW over `param_groups` with the paper's β = (0.9, 0.99)."""
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, decay_lr_scale),
                             lr=lr, betas=betas, eps=eps)
