"""Peak memory and step time of one training step (forward + backward) with and without the two
memory walls of issue 15: activation checkpointing (`train.grad_cp`) and the chunked LM-head loss
(`train.loss_chunk`).

Usage: .venv/bin/python bench/train_memory.py [--seq 1024 2048 4096] [--paths a b c]
           [--steps 2] [--out bench/results/train_memory.md]
       (a smoke run: --seq 256 --layers 2 --embd 128 --vocab 4096 --steps 1)

Model: Finch L12 D768 V65536 (head size 64), fp32 on the CPU, micro-batch 1, every position a
target, L2Wrap on (RWKV-LM's B·T divisor). Paths:
  a  the step before issue 15: logits [B, T, V] from the model, F.cross_entropy over them and
     L2Wrap reading them all (the trainer's code then, written out here)
  b  a with grad_cp (every block recomputed in backward)
  c  b with the chunked head loss (`lm_loss` under `head_loss_options(loss_chunk, B·T)`)
  d  the chunked head loss alone (no grad_cp), to separate the two walls' shares
Targets (issue 15): c's peak <= 1/3 of a's at T=4096, at <= 1.4x a's step time.

Measurement: each (T, path) runs in two fresh subprocesses. Memory: glibc is told to mmap every
allocation of 16 KiB or more (`MALLOC_MMAP_THRESHOLD_`), so the resident set follows the live
tensors; one step runs (libraries warm up, the .grad tensors are allocated — the trainer
accumulates into them), the peak resident set is reset (`5` written to /proc/self/clear_refs
resets VmHWM; getrusage's lifetime ru_maxrss cannot be reset) and the peak of a second step
above the resident set before it is reported (`rwkv_mm.planning.devices`, as the trainer's
records): the step's activations, logits and workspaces —
what the planner's activation estimate (issue 15's `rwkv-mm plan`, `rwkv_mm.planning.estimate`
on the meta device, the last column) predicts; tests/planning/peak_probe.py measures
the same way. torch keeps no CPU allocator statistics by default, hence RSS. Time: default malloc,
`--warmup` untimed steps, then the median of `--steps` timed ones. The load average is printed
before and after: on a shared machine step times move with it, peaks do not.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rwkv_mm.backbone import RWKV, RWKVConfig
from rwkv_mm.planning import estimate
from rwkv_mm.planning.devices import peak_memory_bytes, reset_peak_memory, resident_bytes
from rwkv_mm.training.config import TrainConfig

PATHS = {
    "a": "full logits + F.cross_entropy + L2Wrap (before issue 15)",
    "b": "a + grad_cp",
    "c": "grad_cp + chunked head loss",
    "d": "chunked head loss only",
}
MIB = 2 ** 20
#: the memory child's malloc: every allocation of 16 KiB or more gets its own mmap, unmapped when
#: freed, so the resident set follows the live tensors (glibc's default dynamic threshold keeps
#: freed memory in its arenas, where a peak-RSS delta cannot see it being reused)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "16384"}


# ----------------------------------------------------------------------------- one configuration
def _step_fn(path: str, model, tokens: torch.Tensor, targets: torch.Tensor, loss_chunk: int):
    """One forward + backward of `path` (see the module docstring)."""
    from rwkv_mm.training.l2wrap import l2wrap
    from rwkv_mm.training.lm_head_loss import head_loss_options, lm_loss

    n_positions = targets.numel()

    def before_issue_15() -> float:
        logits, _ = model(tokens)  # [B, T, V]
        loss_sum = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
        l2wrap(loss_sum / n_positions, logits, n_positions).backward()
        return float(loss_sum.detach())

    def chunked() -> float:
        with head_loss_options(loss_chunk, n_positions):
            loss_sum, n_tokens, _ = lm_loss(model, {"input_ids": tokens, "targets": targets})
        (loss_sum / n_tokens).backward()
        return float(loss_sum.detach())

    return before_issue_15 if path in ("a", "b") else chunked


def _config(args: argparse.Namespace) -> RWKVConfig:
    return RWKVConfig(version="6", n_layer=args.layers, n_embd=args.embd, vocab_size=args.vocab,
                      head_size=args.head_size)


def run_child(args: argparse.Namespace) -> None:
    """Measure one (T, path) in this process (`--measure memory` or `time`); print one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = RWKV(_config(args)).train()
    model.set_grad_checkpointing(args.path in ("b", "c"))
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, args.vocab, (1, args.seq_len), generator=g)
    targets = torch.randint(0, args.vocab, (1, args.seq_len), generator=g)
    step = _step_fn(args.path, model, tokens, targets, args.loss_chunk)
    if args.measure == "memory":  # the second step's peak above what the first left resident
        step()  # allocates the .grad tensors (kept: the trainer accumulates into them)
        gc.collect()
        cpu = torch.device("cpu")
        reset_peak_memory(cpu)
        base = resident_bytes()
        step()
        print(json.dumps({"peak": peak_memory_bytes(cpu) - base}))
        return
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=False)
    print(json.dumps({"step_s": times}))


def measure(args: argparse.Namespace, T: int, path: str) -> dict:
    """Run one configuration: its memory and its time, each in a fresh subprocess."""
    result = {}
    for what in ("memory", "time"):
        cmd = [sys.executable, __file__, "--child", what, "--path", path, "--seq-len", str(T)]
        for name in ("steps", "warmup", "threads", "layers", "embd", "vocab", "head_size", "loss_chunk"):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        env = {**os.environ, **(MALLOC_ENV if what == "memory" else {})}
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise SystemExit(f"T={T} path {path} ({what}) failed:\n{done.stderr[-3000:]}")
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return result


# ----------------------------------------------------------------------------- the planner
@dataclass
class _Data:
    ctx_len: int


@dataclass
class _Run:
    """What the planner reads of a language-model recipe (backbone, data.ctx_len, train)."""

    backbone: RWKVConfig
    data: _Data
    train: TrainConfig


def planner_estimate(args: argparse.Namespace, T: int) -> Callable[[str], float]:
    """path -> the planner's activation peak (MiB) at sequence length T."""
    run = _Run(_config(args), _Data(T), TrainConfig(batch_size=1, precision="fp32", l2wrap=True,
                                                    loss_chunk=args.loss_chunk))
    plan = estimate(run, runner="bench_train_memory", device="cpu", micro_batch=1)

    def at(path: str) -> float:
        chunk = args.loss_chunk if path in ("c", "d") else 0
        return plan.activation_bytes(1, grad_cp=path in ("b", "c"), loss_chunk=chunk) / MIB

    return at


# ----------------------------------------------------------------------------- the table
def table(args: argparse.Namespace) -> str:
    load_before = os.getloadavg()
    rows = []
    header = ("| T | path | peak MiB | peak vs a | step s | time vs a | planner est. MiB |\n"
              "|---|---|---|---|---|---|---|")
    for T in args.seq:
        base, planned = None, planner_estimate(args, T)
        for path in args.paths:
            r = measure(args, T, path)
            step_s = statistics.median(r["step_s"])
            if path == "a":
                base = (r["peak"], step_s)
            est = planned(path)
            rel = (f"{r['peak'] / base[0]:.2f}x", f"{step_s / base[1]:.2f}x") if base else ("-", "-")
            rows.append(f"| {T} | {path} | {r['peak'] / MIB:,.0f} | {rel[0]} | {step_s:.2f} | {rel[1]} | "
                        f"{est:,.0f} |")
            print(rows[-1], flush=True)
    load_after = os.getloadavg()
    legend = "\n".join(f"- {k}: {v}" for k, v in PATHS.items() if k in args.paths)
    threads = args.threads or torch.get_num_threads()
    return "\n".join([
        f"Finch L{args.layers} D{args.embd} V{args.vocab} (head size {args.head_size}), fp32 CPU, micro-batch 1, "
        f"loss_chunk {args.loss_chunk}, {args.steps} timed step(s) after {args.warmup} warm-up",
        f"torch {torch.__version__}, {os.cpu_count()} cores, {threads} threads; load average before "
        f"{load_before[0]:.2f} / after {load_after[0]:.2f} (1 min); {time.strftime('%Y-%m-%d %H:%M')}",
        "", legend, "", header, *rows, ""])


def add_shape_arguments(p: argparse.ArgumentParser) -> None:
    """The model's shape and the thread count (shared with bench/peft.py): Finch L12 D768 V65536."""
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--embd", type=int, default=768)
    p.add_argument("--vocab", type=int, default=65536)
    p.add_argument("--head-size", type=int, default=64)


def publish(text: str, out: Path | None) -> None:
    """Print the report and, with `out`, write it there atomically."""
    print(text)
    if out:
        from rwkv_mm.backbone import atomic_write

        atomic_write(out, lambda tmp: Path(tmp).write_text(text))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["a", "b", "c"])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    add_shape_arguments(p)
    p.add_argument("--loss-chunk", type=int, default=1024)
    p.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    p.add_argument("--child", dest="measure", choices=("memory", "time"), help=argparse.SUPPRESS)
    p.add_argument("--path", choices=sorted(PATHS), help=argparse.SUPPRESS)
    p.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        run_child(args)
        return
    if args.paths[0] != "a":
        args.paths = ["a", *[x for x in args.paths if x != "a"]]  # the reference row comes first
    publish(table(args), args.out)


if __name__ == "__main__":
    main()
