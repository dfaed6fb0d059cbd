"""What the trainer does about numbers that are not finite: a step whose loss or gradient norm is
NaN/inf is skipped (up to `train.skip_nonfinite` of them) or stops training naming the step, and
weights that are not finite are never checkpointed."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from rwkv_mm.errors import UserError


def nonfinite_step(loss: float, grad_norm: float, step: int, skipped: int, allowed: int,
                   run_dir: Path) -> str | None:
    """None when the step's loss and gradient norm are finite; else the reason to skip it, or
    (when `skipped` steps already reached `allowed`) a UserError naming step `step`."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return None
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    reason = f"non-finite {what} (loss {loss}, gradient norm {grad_norm})"
    if skipped >= allowed:
        after = f" after {skipped} skipped step(s)" if allowed else ""
        raise UserError(f"training stopped at step {step}: {reason}{after}; no checkpoint "
                        "was written with these weights", where=str(run_dir),
                        fix="lower train.lr, check the data and the init_from weights, or set "
                            "train.skip_nonfinite=N to skip up to N such steps")
    return reason


def check_finite_weights(state: dict[str, torch.Tensor], step: int, run_dir: Path,
                         all_reduce: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> None:
    """A UserError naming the step (on every process: the verdict is all-reduced, since under
    FSDP only rank 0 holds the weights) when a floating-point tensor of `state` is not finite."""
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    flag = all_reduce(torch.tensor(float(bool(bad)), device=device))
    if float(flag) > 0:
        raise UserError(f"non-finite weights after step {step} ({', '.join(bad[:3]) or 'on rank 0'}); "
                        "the checkpoint was not written", where=str(run_dir),
                        fix="lower train.lr or check the init_from weights")
