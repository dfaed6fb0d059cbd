"""Where a run's records go, and what they hold beyond the loss.

`train.loggers` picks the sinks (rank 0 only): `jsonl` (metrics.jsonl: the run's own record —
loss.png and resume read it, so it is always on), `tensorboard` (event files in the run folder:
`tensorboard --logdir runs/`) and `wandb` (Weights & Biases, opt-in, when the package is
installed). Every record is `{"step": n, ...}`; the sinks take its numbers.

`StepMeter` adds what users expect of a training log, per logging window: tokens/s, seconds per
step, peak memory (the CUDA allocator's peak, or the process's peak resident set on the CPU) and,
when the device's peak FLOP/s is known (`rwkv_mm.planning.devices`, or `train.peak_tflops`),
MFU: the model FLOPs of a step — counted once, on the first step, by the planner's `FlopMeter`
(forward matmuls, convolutions and attention; backward charged per operand that needs a
gradient; grad_cp's recomputation not counted) — over the step time and the peak.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from rwkv_mm.errors import UserError
from rwkv_mm.planning.devices import device_peak_tflops, peak_memory_bytes, reset_peak_memory

from .run_dir import LOGGER_OUTPUTS  # what the sinks write (`rwkv-mm train --overwrite` removes them)
from .step_logs import append_record

TENSORBOARD_PATTERN = LOGGER_OUTPUTS[0]
WANDB_ID_FILE = Path("wandb") / "rwkv_mm_run_id"


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a record, but its step (what TensorBoard and W&B plot)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class RunLoggers:
    """The sinks of one `fit` (a context manager; closed on errors too). Only rank 0 writes.

    Args:
        run_dir: the run folder (metrics.jsonl, event files, wandb/).
        names: `train.loggers`.
        metrics_path: the JSONL file.
        resume_step: the checkpoint's step when resuming (TensorBoard drops its events after it;
            W&B continues the run), None for a fresh run (old event files are removed).
        config: the run's settings, for W&B.
        active: False on ranks other than 0.
    """

    def __init__(self, run_dir: Path, names: list[str], metrics_path: Path, resume_step: int | None,
                 config: dict[str, Any] | None = None, active: bool = True) -> None:
        self.run_dir, self.metrics_path = Path(run_dir), Path(metrics_path)
        self.names = list(names) if active else []
        self.tensorboard = self.wandb = None
        if "wandb" in self.names:  # checked first: a missing package fails before anything is written
            self.wandb = _open_wandb(self.run_dir, resume_step, config or {})
        if "tensorboard" in self.names:
            self.tensorboard = _open_tensorboard(self.run_dir, resume_step)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (`step` and values) to every sink."""
        if "jsonl" in self.names:
            append_record(self.metrics_path, record)
        numbers = _numbers(record)
        if self.tensorboard is not None and numbers:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, record["step"])
            self.tensorboard.flush()  # a killed run keeps what it logged
        if self.wandb is not None and numbers:
            self.wandb.log(numbers, step=record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def __enter__(self) -> "RunLoggers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_tensorboard(run_dir: Path, resume_step: int | None):
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_step is None:
        for old in run_dir.glob(TENSORBOARD_PATTERN):  # a fresh run starts its curves anew
            old.unlink()
        return SummaryWriter(log_dir=str(run_dir))
    return SummaryWriter(log_dir=str(run_dir), purge_step=resume_step + 1)  # steps after it are redone


def _open_wandb(run_dir: Path, resume_step: int | None, config: dict[str, Any]):
    try:
        import wandb
    except ImportError:
        raise UserError("train.loggers has wandb, but the wandb package is not installed",
                        where="train.loggers", fix="pip install wandb, or leave wandb out of train.loggers") from None
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resume_step is not None and id_file.is_file() else None
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rwkv-mm"), name=run_dir.name, dir=str(run_dir),
                     config=config, id=run_id, resume="allow" if run_id else None)
    if run_id is None and getattr(run, "id", None):
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(str(run.id))
    return run


class StepMeter:
    """Throughput, step time, peak memory and MFU per logging window (module docstring).

    Args:
        device: the training device (its peak memory and peak FLOP/s).
        peak_tflops: `train.peak_tflops` (0: the device table's entry; none on a CPU).
    """

    def __init__(self, device: torch.device, peak_tflops: float = 0.0) -> None:
        self.device = device
        self.peak_tflops = device_peak_tflops(device, peak_tflops)
        self.flops_per_step: int | None = None
        self._tokens, self._steps, self._start = 0.0, 0, time.perf_counter()
        reset_peak_memory(device)

    def step(self) -> contextlib.AbstractContextManager:
        """Wrap a training step: the first one is counted by the FLOP meter (when MFU can be
        given: the peak FLOP/s is known)."""
        if self.flops_per_step is not None or self.peak_tflops is None:
            return contextlib.nullcontext()
        return self._count()

    @contextlib.contextmanager
    def _count(self):
        from rwkv_mm.planning.flops import FlopMeter

        with FlopMeter() as meter:
            yield
        self.flops_per_step = meter.total

    def add(self, tokens: float) -> None:
        """One step done, with its (global) target tokens."""
        self._tokens += tokens
        self._steps += 1

    def window(self) -> dict[str, float]:
        """The window's figures since the last call (then a new window starts): tokens_per_s,
        step_s, peak_mem_gb and, when known, tflops (per device) and mfu."""
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        step_s = elapsed / max(self._steps, 1)
        out = {"tokens_per_s": self._tokens / elapsed, "step_s": step_s,
               "peak_mem_gb": peak_memory_bytes(self.device) / 1e9}
        if self.flops_per_step is not None and self.peak_tflops:
            achieved = self.flops_per_step / step_s / 1e12
            out.update(tflops=achieved, mfu=achieved / self.peak_tflops)
        self._tokens, self._steps, self._start = 0.0, 0, now
        reset_peak_memory(self.device)
        return out

    @staticmethod
    def postfix(figures: dict[str, float]) -> dict[str, str]:
        """The progress bar's share of `window()`'s figures."""
        out = {"tok/s": f"{figures['tokens_per_s']:.0f}", "s/step": f"{figures['step_s']:.3g}",
               "mem": f"{figures['peak_mem_gb']:.1f}G"}
        if "mfu" in figures:
            out["mfu"] = f"{100 * figures['mfu']:.1f}%"
        return out
