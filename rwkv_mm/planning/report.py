"""The plan as text: what `rwkv-mm plan` prints (and the README shows)."""

from __future__ import annotations

from .flops import CLIP_FORMULA
from .plan import GB, Estimate

_KIND_NAMES = {"matmul": "matmuls", "head": "LM head", "wkv": "WKV", "attention": "attention",
               "conv": "convolutions", "forward only": "frozen no_grad parts (forward only)"}


def _gb(n: float) -> str:
    return f"{n / GB:.1f}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def memory_table(e: Estimate) -> list[str]:
    """Memory per device for DDP / FSDP, with and without grad_cp, in GB."""
    cols = [(s.strategy + (" + grad_cp" if s.grad_cp else "")) for s in e.scenarios]
    buffers = "DDP buckets / FSDP gathered"
    rows = [
        ("weights (fp32)", [_gb(s.states.weights) for s in e.scenarios]),
        ("gradients (fp32)", [_gb(s.states.gradients) for s in e.scenarios]),
        ("AdamW m, v (fp32)", [_gb(s.states.optimizer) for s in e.scenarios]),
        (buffers, [_gb(s.states.buffers) for s in e.scenarios]),
        (f"activations, micro-batch {e.micro_batch}", [_gb(s.activations.at(s.micro_batch)) for s in e.scenarios]),
        ("total", [_gb(s.total) for s in e.scenarios]),
        (f"fits {_gb(e.budget)} GB", ["yes" if s.fits else "no" for s in e.scenarios]),
        ("largest micro-batch that fits", [str(s.max_micro_batch) if s.max_micro_batch else "none"
                                           for s in e.scenarios]),
        ("activation peak at", [s.activations.phase(s.micro_batch) for s in e.scenarios]),
    ]
    label = max(len(r[0]) for r in rows) + 2
    width = max(len(v) for values in [cols] + [r[1] for r in rows] for v in values) + 2
    lines = [f"{'memory per device (GB)':{label}s}" + "".join(f"{c:>{width}s}" for c in cols)]
    lines += [f"{name:{label}s}" + "".join(f"{v:>{width}s}" for v in values) for name, values in rows]
    return lines


def format_estimate(e: Estimate, recipe: str = "") -> str:
    """The whole plan: the model and its parameters, the run's shape, the memory table, FLOPs per
    token with the family's formula, and the time of train.max_steps at the stated MFU."""
    p = e.params
    frozen = ", ".join(f"{name} {_count(n)}" for name, n in e.frozen_parts.items())
    dtype = "bf16 autocast over fp32 weights" if e.bf16 else "fp32"
    wkv = "the CUDA kernel" if e.wkv_kernel else "the chunked PyTorch form"
    head = ("" if e.plan.head is None else f", chunked LM-head loss ({e.loss_chunk} positions)" if e.loss_chunk
            else ", full-vocabulary logits")
    devices = f"{e.gpus} GPU{'s' if e.gpus > 1 else ''} x {_gb(e.gpu_mem)} GB" if e.device == "cuda" else "CPU"
    lines = [f"plan: {recipe or e.runner} (runner {e.runner})", f"  {e.summary}",
             f"  parameters {_count(p.total)}: {_count(p.trainable)} trainable, {_count(p.frozen)} frozen"
             + (f" (of which {frozen})" if frozen else ""),
             f"  {devices} ({_gb(e.budget)} GB usable per device), {dtype}, WKV: {wkv}{head}",
             f"  batch {e.batch_size} sequences of {e.positions} positions = micro-batch {e.micro_batch}"
             f" x {e.gpus} device{'s' if e.gpus > 1 else ''} x {e.accumulation} accumulation step"
             f"{'s' if e.accumulation > 1 else ''}", ""]
    lines += memory_table(e)
    lines += ["", f"FLOPs per token (training, model FLOPs): {e.flops_per_token / 1e9:.3f} GFLOP"]
    total = sum(e.flops_by_kind.values()) or 1
    lines += [f"  {_KIND_NAMES.get(k, k):36s} {v / e.positions / 1e9:8.3f} GFLOP/token ({100 * v / total:4.1f}%)"
              for k, v in sorted(e.flops_by_kind.items(), key=lambda kv: -kv[1]) if v]
    if e.formula:
        lines.append(f"  formula: {e.formula}")
    if "CLIP tower" in e.frozen_parts:
        lines.append(f"  {CLIP_FORMULA}")
    tokens = e.max_steps * e.batch_size * e.positions
    lines += ["", f"time: {e.max_steps} steps x {e.batch_size} x {e.positions} = {tokens / 1e9:.2f}B tokens, "
              f"{e.max_steps * e.batch_size * e.flops_per_sequence:.3g} FLOPs at {100 * e.mfu:.0f}% MFU of "
              f"{e.gpus} x {e.peak_tflops:g} TFLOP/s: {_hours(e.seconds())} "
              f"(grad_cp recomputes the blocks' forward: {_hours(e.seconds(grad_cp=True))})"]
    lines += [f"note: {n}" for n in e.notes]
    return "\n".join(lines)
