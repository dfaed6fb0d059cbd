"""GPU benchmark of the WKV op (paper §9 setup): our CUDA kernels vs the peers (``--op wkv7``: Goose).

Setup: B=8, D=4096 as 64 heads of 64, T in {1k, 2k, 4k, 8k, 16k}, bf16 r/k/v, fp32 log decay
(as Finch computes it), no initial state, the final state returned by every WKV implementation.
For each T and implementation: forward time (no grad), forward+backward time (dense upstream
gradient of y) and the peak memory of a forward+backward step (inputs and their gradients
included; "extra" = peak minus what was allocated before the step). Times are medians of CUDA
event timings after warm-up.

Implementations:
  cuda     rwkv_mm.kernels.wkv_cuda.wkv_cuda (this repo's kernels; built on first use, ~1 min)
  chunked  rwkv_mm.kernels.wkv_chunked.wkv_chunked (pure PyTorch; may run out of memory at 16k)
  fla      fla.ops.rwkv6.chunk_rwkv6 (Triton; scale=1.0, log-decay w, output_final_state=True);
           skipped with a note when fla is not importable. Its first calls autotune (minutes).
  sdpa     torch.nn.functional.scaled_dot_product_attention, causal, forced to the
           FlashAttention-2 backend, q/k/v [B, 64, T, 64] bf16.

``--op wkv7`` times the WKV-7 (Goose) op the same way: cuda = rwkv_mm.kernels.wkv7_cuda.wkv7_cuda,
chunked = wkv7_chunked, fla = fla.ops.rwkv7.chunk_rwkv7 (same argument order, log-decay w; its
state is key-major, ours value-major), with bf16 r/k/v/a/b made as Goose makes them and an fp32
log decay -e^-0.5 sigmoid(x); written to bench/results/wkv7_gpu.md.

Before timing, the outputs of fla and chunked are checked against ours at the smallest T
(relative RMS difference printed): a mismatch means the comparison is not like for like.

GPU session (offline machine with a CUDA torch preinstalled; carry the git-ignored .whl/ folder
with fla-core, einops and ninja), from the repository root. All of issue 18's session in one
command: ``bash bench/gpu_session.sh`` (its header lists the wheels to carry, the steps and their
time boxes; results under $OUT). Step by step:

    pip install --no-deps --no-build-isolation -e . .whl/fla_core-*.whl .whl/einops-*.whl .whl/ninja-*.whl
    export CUDA_HOME=/usr/local/cuda                                   # if torch guesses wrong
    python -m pytest -q tests/kernels                                  # GPU tests build the kernels
    python bench/wkv_gpu.py                                            # all T, all implementations
    python bench/wkv_gpu.py --seq 1024 4096 --impls cuda fla sdpa      # a subset
    python bench/wkv_gpu.py --op wkv7 --seq 1024 4096 --impls cuda fla # WKV-7 vs fla's chunk_rwkv7
    python bench/wkv_gpu.py --seq 4096 --impls cuda --cuda-variants WKV_STAGE_STEPS=8 \
        WKV_MIN_RESIDENT_THREADS=1024 --out ''                         # tuning knobs (wkv_cuda.cu)

(Fetch the wheels on a networked machine with
``pip download fla-core==0.6.0 einops ninja --no-deps -d .whl/``. fla-core holds fla.ops; the
flash-linear-attention wheel adds only layers/models and needs transformers. The chunked form at
16k may run out of memory, and fla autotunes on its first calls: ``--impls cuda fla sdpa`` first
when device time is short.)

Prints a markdown table and writes it, with the device and versions, to
bench/results/wkv_gpu.md (``--out`` to change, ``--out ''`` not to write).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rwkv_mm.kernels.wkv7_chunked import wkv7_chunked
from rwkv_mm.kernels.wkv7_cuda import _apply7, build7, wkv7_cuda
from rwkv_mm.kernels.wkv_chunked import wkv_chunked
from rwkv_mm.kernels.wkv_cuda import _apply, build, wkv_cuda

B, H, N = 8, 64, 64
IMPLS = ("cuda", "chunked", "fla", "sdpa")
DEFAULT_OUT = {op: Path(__file__).resolve().parent / "results" / f"{op}_gpu.md" for op in ("wkv", "wkv7")}
Step = Callable[[], list[torch.Tensor]]  # runs the op, returns the outputs that get gradients


@dataclass
class Row:
    T: int
    impl: str
    fwd_ms: float | None = None
    fwd_bwd_ms: float | None = None
    peak_gib: float | None = None
    extra_gib: float | None = None
    note: str = ""


def load_fla(op: str = "wkv") -> tuple[Callable[..., tuple[torch.Tensor, torch.Tensor]] | None, str]:
    """(chunk_rwkv6, or chunk_rwkv7 for op "wkv7", and fla's version) or (None, why not)."""
    try:
        import importlib

        import fla

        name = "rwkv7" if op == "wkv7" else "rwkv6"
        fn = getattr(importlib.import_module(f"fla.ops.{name}"), f"chunk_{name}")
    except Exception as e:  # ImportError, or fla's own device checks failing
        return None, f"fla not importable ({type(e).__name__}: {e})"
    return fn, getattr(fla, "__version__", "?")


def make_wkv_inputs(T: int, seed: int = 0) -> list[torch.Tensor]:
    """r, k, v bf16, w fp32 log decay (-exp(x), x in [-8, 3]), u bf16; all require grad."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    w = -torch.exp(torch.rand(B, T, H, N, device="cuda", generator=g) * 11 - 8)
    u = torch.randn(H, N, device="cuda", generator=g, dtype=torch.bfloat16)
    return [x.requires_grad_() for x in (r, k, v, w, u)]


def make_wkv7_inputs(T: int, seed: int = 0) -> list[torch.Tensor]:
    """r, k, v, a, b bf16 and w fp32 as Goose makes them; all require grad (order r, w, k, v, a, b)."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn() -> torch.Tensor:
        return torch.randn(B, T, H, N, device="cuda", generator=g)

    r, k, v = (randn().bfloat16() for _ in range(3))
    w = -math.exp(-0.5) * torch.sigmoid(randn())
    kappa = F.normalize(randn(), dim=-1)
    alpha = torch.rand(B, T, H, N, device="cuda", generator=g)
    a, b = (-kappa).bfloat16(), (kappa * alpha).bfloat16()
    return [x.requires_grad_() for x in (r, w, k, v, a, b)]


def wkv7_step(impl: str, xs: list[torch.Tensor], fla_fn) -> Step:
    """The WKV-7 implementations; each returns [y, final state (value-major)]."""
    if impl == "cuda":
        return lambda: list(wkv7_cuda(*xs))
    if impl.startswith("cuda["):  # a tuning variant: cuda[WKV7_CHUNK=64]
        ext = build7(N, defines=tuple(impl[5:-1].split(",")))
        return lambda: list(_apply7(*xs, None, ext))
    if impl == "chunked":
        return lambda: list(wkv7_chunked(*xs))
    if impl == "fla":
        def run() -> list[torch.Tensor]:
            y, s = fla_fn(*xs, scale=1.0, initial_state=None, output_final_state=True)
            return [y, s.transpose(-1, -2)]  # fla's state is [B, H, K, V]

        return run
    raise ValueError(impl)


def wkv_step(impl: str, xs: list[torch.Tensor], fla_fn) -> Step:
    if len(xs) == 6:
        return wkv7_step(impl, xs, fla_fn)
    r, k, v, w, u = xs
    if impl == "cuda":
        return lambda: list(wkv_cuda(r, k, v, w, u))
    if impl.startswith("cuda["):  # a tuning variant: cuda[WKV_STAGE_STEPS=32,...]
        ext = build(N, defines=tuple(impl[5:-1].split(",")))
        return lambda: list(_apply(r, k, v, w, u, None, ext))
    if impl == "chunked":
        return lambda: list(wkv_chunked(r, k, v, w, u))
    if impl == "fla":
        return lambda: list(fla_fn(r, k, v, w, u, scale=1.0, initial_state=None, output_final_state=True))
    raise ValueError(impl)


def sdpa_inputs(T: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(B, H, T, N, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_()
            for _ in range(3)]


def sdpa_step(xs: list[torch.Tensor]) -> Step:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = xs

    def step() -> list[torch.Tensor]:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return [F.scaled_dot_product_attention(q, k, v, is_causal=True)]

    return step


def median_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(step: Step, xs: list[torch.Tensor], warmup: int, repeats: int) -> tuple[float, float, float, float]:
    """(fwd ms, fwd+bwd ms, peak GiB, extra GiB) of one implementation."""
    with torch.no_grad():
        outs = step()
    grads = [torch.randn_like(o) if i == 0 else None for i, o in enumerate(outs)]  # dy only
    del outs

    def fwd() -> None:
        with torch.no_grad():
            step()

    def fwd_bwd() -> None:
        outs = step()
        torch.autograd.backward(outs[:1], grads[:1])
        for x in xs:
            x.grad = None

    fwd_ms = median_ms(fwd, warmup, repeats)
    fwd_bwd_ms = median_ms(fwd_bwd, warmup, repeats)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    outs = step()
    torch.autograd.backward(outs[:1], grads[:1])
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    for x in xs:
        x.grad = None
    del outs
    gib = 2.0**30
    return fwd_ms, fwd_bwd_ms, peak / gib, (peak - base) / gib


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


def check_agreement(T: int, impls: list[str], fla_fn, op: str = "wkv") -> list[str]:
    """Relative RMS difference of y and the final state vs the CUDA kernels, per implementation."""
    notes = []
    xs = MAKERS[op](T, seed=1)
    with torch.no_grad():
        y0, s0 = wkv_step("cuda", xs, fla_fn)()
        for impl in impls:
            if impl in ("cuda", "sdpa") or (impl == "fla" and fla_fn is None):
                continue
            y, s = wkv_step(impl, xs, fla_fn)()
            notes.append(f"{impl} vs cuda at T={T}: y {rel_rms(y, y0):.1e}, final state {rel_rms(s, s0):.1e} "
                         "(relative RMS)")
    return notes


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[Row]) -> str:
    by_key = {(r.T, r.impl): r for r in rows}
    lines = ["| T | impl | fwd ms | fwd+bwd ms | peak GiB | extra GiB | fwd+bwd: SDPA / impl | fwd+bwd: fla / impl "
             "| note |", "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratios = []
        for ref in ("sdpa", "fla"):
            other = by_key.get((r.T, ref))
            ok = other and other.fwd_bwd_ms and r.fwd_bwd_ms
            ratios.append(f"{other.fwd_bwd_ms / r.fwd_bwd_ms:.2f}x" if ok else "-")
        lines.append(f"| {r.T} | {r.impl} | {fmt(r.fwd_ms, '.2f')} | {fmt(r.fwd_bwd_ms, '.2f')} | "
                     f"{fmt(r.peak_gib, '.2f')} | {fmt(r.extra_gib, '.2f')} | {ratios[0]} | {ratios[1]} | {r.note} |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets, checked on the measured rows."""
    by_key = {(r.T, r.impl): r for r in rows}
    out = []

    def ratio(T: int, a: str, b: str, attr: str) -> float | None:
        x, y = by_key.get((T, a)), by_key.get((T, b))
        if not x or not y or getattr(x, attr) is None or getattr(y, attr) is None:
            return None
        return getattr(x, attr) / getattr(y, attr)

    for T in (4096, 16384):
        q = ratio(T, "fla", "cuda", "fwd_bwd_ms")
        if q is not None:
            out.append(f"T={T}: fwd+bwd fla/cuda = {q:.2f}x (target >= 1.2x): {'met' if q >= 1.2 else 'NOT met'}")
    q = ratio(16384, "sdpa", "cuda", "fwd_bwd_ms")
    if q is not None:
        out.append(f"T=16384: fwd+bwd sdpa/cuda = {q:.2f}x (target >= 4.2x): {'met' if q >= 4.2 else 'NOT met'}")
    q = ratio(16384, "cuda", "sdpa", "peak_gib")
    if q is not None:
        out.append(f"T=16384: peak memory cuda/sdpa = {q:.2f} (target <= 0.6): {'met' if q <= 0.6 else 'NOT met'}")
    return out


MAKERS = {"wkv": make_wkv_inputs, "wkv7": make_wkv7_inputs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op", choices=sorted(MAKERS), default="wkv", help="wkv (Eagle/Finch) or wkv7 (Goose)")
    ap.add_argument("--seq", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--cuda-variants", nargs="*", default=[], metavar="DEFINES",
                    help="extra builds of our kernels with tuning defines, e.g. WKV_STAGE_STEPS=32 "
                         "'WKV_STAGE_STEPS=8,WKV_MIN_RESIDENT_THREADS=768' (one row each)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=None, help="markdown file to write ('' = don't; default results/<op>_gpu.md)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")

    fla_fn, fla_version = load_fla(args.op) if "fla" in args.impls else (None, "not requested")
    notes = [] if fla_fn is not None or "fla" not in args.impls else [fla_version]
    notes += check_agreement(min(args.seq), args.impls, fla_fn, args.op)
    for n in notes:
        print(n, flush=True)

    impls = args.impls + [f"cuda[{v}]" for v in args.cuda_variants]
    rows: list[Row] = []
    for T in args.seq:
        for impl in impls:
            row = Row(T, impl)
            if impl == "fla" and fla_fn is None:
                row.note = "skipped: fla not importable"
                rows.append(row)
                continue
            xs = sdpa_inputs(T) if impl == "sdpa" else MAKERS[args.op](T)
            step = sdpa_step(xs) if impl == "sdpa" else wkv_step(impl, xs, fla_fn)
            try:
                row.fwd_ms, row.fwd_bwd_ms, row.peak_gib, row.extra_gib = measure(step, xs, args.warmup, args.repeats)
            except torch.OutOfMemoryError:
                row.note = "out of memory"
            del xs, step
            torch.cuda.empty_cache()
            rows.append(row)
            print(f"T={T:>6} {impl:>8}: fwd {fmt(row.fwd_ms, '.2f')} ms, fwd+bwd {fmt(row.fwd_bwd_ms, '.2f')} ms, "
                  f"peak {fmt(row.peak_gib, '.2f')} GiB {row.note}", flush=True)

    props = torch.cuda.get_device_properties(0)
    header = [
        f"# {'WKV-7 (Goose)' if args.op == 'wkv7' else 'WKV'} benchmark on GPU (paper §9 setup)",
        "",
        f"{dt.date.today()}, {props.name}, torch {torch.__version__} (CUDA {torch.version.cuda}), fla {fla_version}.",
        f"B={B}, H={H}, N={N} (D={H * N}), bf16 {'r/k/v/a/b' if args.op == 'wkv7' else 'r/k/v/u'}, fp32 log decay, "
        "no initial state; median of "
        f"{args.repeats} runs after {args.warmup} warm-up; peak = max allocated during one fwd+bwd step "
        "(inputs and gradients included), extra = peak - allocated before the step. "
        f"Produced by `python bench/wkv_gpu.py --op {args.op}`.",
        "",
    ]
    text = "\n".join(header + [table(rows), ""] + [f"- {n}" for n in notes + (targets(rows) if args.op == "wkv" else [])]) + "\n"
    print()
    print(text)
    out_path = str(DEFAULT_OUT[args.op]) if args.out is None else args.out
    if out_path:
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
