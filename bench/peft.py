"""Parameter-efficient tuning on the CPU (issue 16): full fine-tuning vs LoRA vs state tuning at
T=1024, and segment training's peak memory as the sequence grows.

Usage: .venv/bin/python bench/peft.py [--seq 1024] [--segment-seq 4096 16384 65536]
           [--segment-len 1024] [--whole-seq 4096] [--out bench/results/peft.md]
       (a smoke run: --layers 2 --embd 128 --vocab 4096 --seq 256 --segment-seq 512 1024
        --segment-len 256 --whole-seq 512)

Model: Finch L12 D768 V65536 (head size 64), fp32 on the CPU, micro-batch 1, every position a
target, through the project's own Trainer (the chunked LM-head loss at its default 1024, L2Wrap,
AdamW with the paper's groups) — what `rwkv-mm train` runs:
  full   every weight trains
  lora   train.peft: LoRA r=32, alpha=64 on every time-mix and channel-mix projection (the default)
  lora-att  the same on the time mix's receptance/key/value/output only
  state  train.state_tuning: each layer's initial WKV state trains, no weight does
and segment training (`train.segment_len` S, full fine-tuning) at longer T, beside the same Trainer
on whole sequences (T <= --whole-seq; longer ones would not fit this machine's 24 GB: the
planner's estimate stands in their row).

Measurement: each row runs in fresh subprocesses. Memory (glibc's MALLOC_MMAP_THRESHOLD_ makes
the resident set follow the live tensors, as in bench/train_memory.py): the optimizer state is
created first (one AdamW step on zero gradients), the peak resident set is reset and one
training step's peak above the resident set before it is reported (activations, gradients,
workspaces; weights and optimizer state are resident before). Optimizer-state bytes: the AdamW
tensors after that step. Time (T=1024 rows): one warm-up step, then the median of `--steps`.
The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from train_memory import MALLOC_ENV, MIB, add_shape_arguments, planner_estimate, publish  # bench/ is this script's folder

# this file is bench/peft.py: with its folder first on sys.path, `import peft` would find it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rwkv_mm.backbone import RWKV, RWKVConfig
from rwkv_mm.planning.devices import peak_memory_bytes, reset_peak_memory, resident_bytes
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.peft_config import PeftConfig
from rwkv_mm.training.trainer import Trainer

MODES = {
    "full": "full fine-tuning",
    "lora": "LoRA r=32 (alpha 64) on the default targets: every time-mix and channel-mix projection",
    "lora-att": "LoRA r=32 (alpha 64) on the time mix's receptance, key, value and output only",
    "state": "state tuning (initial WKV states only)",
}


# ----------------------------------------------------------------------------- one configuration
def _train_config(mode: str, segment_len: int) -> TrainConfig:
    attention = ["*.att.receptance", "*.att.key", "*.att.value", "*.att.output"]
    extra = {"lora": {"peft": PeftConfig(method="lora", r=32, alpha=64.0)},
             "lora-att": {"peft": PeftConfig(method="lora", r=32, alpha=64.0, target_modules=attention)},
             "state": {"state_tuning": True}}.get(mode, {})
    return TrainConfig(max_steps=10_000, batch_size=1, lr=1e-5, lr_final=1e-5, warmup_steps=0,
                       precision="fp32", eval_every=0, save_every=0, log_every=1, loggers=["jsonl"],
                       segment_len=segment_len, **extra)


def _trainer(args: argparse.Namespace, run_dir: str) -> Trainer:
    torch.manual_seed(0)
    model = RWKV(RWKVConfig(version="6", n_layer=args.layers, n_embd=args.embd, vocab_size=args.vocab,
                            head_size=args.head_size)).train()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, args.vocab, (args.seq_len + 1,), generator=g)
    sample = {"input_ids": tokens[:-1], "targets": tokens[1:]}

    def collate(samples: list[dict]) -> dict:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    return Trainer(model, _train_config(args.mode, args.segment_len), run_dir, [sample], collate, device="cpu")


def _optimizer_state_bytes(trainer: Trainer) -> int:
    return sum(t.numel() * t.element_size() for state in trainer.optimizer.state.values()
               for t in state.values() if isinstance(t, torch.Tensor))


def run_child(args: argparse.Namespace) -> None:
    """Measure one row in this process (`--child memory|time`); print one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = _trainer(args, run_dir)
        if args.measure == "memory":
            trainable = [p for p in trainer.model.parameters() if p.requires_grad]
            for p in trainable:  # the optimizer state exists before the measured step, as in a run
                p.grad = torch.zeros_like(p)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            cpu = torch.device("cpu")
            reset_peak_memory(cpu)
            base = resident_bytes()
            trainer.train_step()
            print(json.dumps({"peak": peak_memory_bytes(cpu) - base,
                              "trainable": sum(p.numel() for p in trainable),
                              "optimizer_bytes": _optimizer_state_bytes(trainer)}))
            return
        trainer.train_step()  # warm-up (also creates the optimizer state)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
        trainer.close()
        print(json.dumps({"step_s": times}))


def measure(args: argparse.Namespace, mode: str, T: int, segment_len: int, what: tuple[str, ...]) -> dict:
    """Run one row's measurements, each in a fresh subprocess."""
    result: dict = {}
    for measure_kind in what:
        cmd = [sys.executable, __file__, "--child", measure_kind, "--mode", mode, "--seq-len", str(T),
               "--segment-len", str(segment_len)]
        for name in ("steps", "threads", "layers", "embd", "vocab", "head_size"):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        env = {**os.environ, **(MALLOC_ENV if measure_kind == "memory" else {})}
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{mode} T={T} S={segment_len} ({measure_kind}) failed:\n{done.stderr[-3000:]}")
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return result


# ----------------------------------------------------------------------------- the tables
def tuning_table(args: argparse.Namespace) -> list[str]:
    rows = ["| mode | trainable params | optimizer state MiB | vs full | peak MiB | step s | time vs full |",
            "|---|---|---|---|---|---|---|"]
    full = None
    for mode in MODES:
        r = measure(args, mode, args.seq, 0, ("memory", "time"))
        step_s = statistics.median(r["step_s"])
        if mode == "full":
            full = r["optimizer_bytes"], step_s
        rows.append(f"| {mode} | {r['trainable']:,} | {r['optimizer_bytes'] / MIB:,.2f} | "
                    f"{r['optimizer_bytes'] / full[0]:.2%} | {r['peak'] / MIB:,.0f} | {step_s:.2f} | "
                    f"{step_s / full[1]:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def segment_table(args: argparse.Namespace) -> list[str]:
    S = args.segment_len
    rows = [f"| T | segments of {S}: peak MiB | vs T={args.segment_seq[0]} | whole sequence: peak MiB |",
            "|---|---|---|---|"]
    first = None
    for T in args.segment_seq:
        seg = measure(args, "full", T, S, ("memory",))["peak"]
        first = first or seg
        if T <= args.whole_seq:
            whole = f"{measure(args, 'full', T, 0, ('memory',))['peak'] / MIB:,.0f} (measured)"
        else:
            whole = f"~{planner_estimate(args, T)('d'):,.0f} (planner's estimate, not run)"
        rows.append(f"| {T} | {seg / MIB:,.0f} | {seg / first:.2f}x | {whole} |")
        print(rows[-1], flush=True)
    return rows


def report(args: argparse.Namespace) -> str:
    load_before = os.getloadavg()
    tuning = tuning_table(args)
    segments = segment_table(args)
    load_after = os.getloadavg()
    threads = args.threads or torch.get_num_threads()
    return "\n".join([
        f"Finch L{args.layers} D{args.embd} V{args.vocab} (head size {args.head_size}), fp32 CPU, micro-batch 1, "
        "the project's Trainer (chunked LM-head loss 1024, L2Wrap, AdamW)",
        f"torch {torch.__version__}, {os.cpu_count()} cores, {threads} threads; load average before "
        f"{load_before[0]:.2f} / after {load_after[0]:.2f} (1 min); {time.strftime('%Y-%m-%d %H:%M')}",
        "", *(f"- {k}: {v}" for k, v in MODES.items()), "",
        f"T={args.seq}, {args.steps} timed step(s) after 1 warm-up; peak = one step above the resident "
        "weights and optimizer state", "", *tuning, "",
        f"Segment training (train.segment_len={args.segment_len}, full fine-tuning): one step's peak", "",
        *segments, ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--segment-seq", type=int, nargs="+", default=[4096, 16384, 65536])
    p.add_argument("--segment-len", type=int, default=1024)
    p.add_argument("--whole-seq", type=int, default=4096, help="longest T also run whole (memory)")
    p.add_argument("--steps", type=int, default=2)
    add_shape_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    p.add_argument("--child", dest="measure", choices=("memory", "time"), help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    p.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.loss_chunk = 1024  # the Trainer's default, for the planner's estimate
    if args.measure:
        run_child(args)
        return
    publish(report(args), args.out)


if __name__ == "__main__":
    main()
