"""CPU benchmark of the WKV operators: chunked form vs the step-by-step reference.

Usage: .venv/bin/python bench/wkv_cpu.py [--ops wkv wkv7] [--seq 256 1024] [--threads 2] [--repeats 10]

Prints best-of-n wall times (the least disturbed by other load on the machine) for the forward
pass and for forward + backward, B=1, H=12, N=64, fp32: WKV (Eagle/Finch) with Finch-style
per-token decays, and WKV-7 (Goose) with Goose's inputs (decays exp(-e^-0.5 sigmoid(x)), a unit
kappa_hat, a = -kappa_hat, b = kappa_hat * alpha). For WKV-7 the decode-step loop (``step``,
`wkv7_recurrent`) is timed too, with ``--with-step``. The issue's target: WKV-7 chunked fwd+bwd
>= 15x the reference at T=1024.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from rwkv_mm.kernels.wkv7_chunked import DEFAULT_BLOCK7, DEFAULT_CHUNK_SIZE7, wkv7_chunked
from rwkv_mm.kernels.wkv7_recurrent import wkv7_recurrent
from rwkv_mm.kernels.wkv7_reference import wkv7_reference
from rwkv_mm.kernels.wkv_chunked import DEFAULT_CHUNK_SIZE, DEFAULT_SUB_CHUNK, wkv_chunked
from rwkv_mm.kernels.wkv_reference import wkv_reference

WkvFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def make_inputs(B: int, T: int, H: int, N: int, seed: int = 0) -> list[torch.Tensor]:
    """r, k, v, w, u with realistic log decays w = -exp(x), x in [-8, 3]; all require grad."""
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    w = -torch.exp(torch.rand(B, T, H, N, generator=g) * 11 - 8)
    u = torch.randn(H, N, generator=g)
    return [x.requires_grad_() for x in (r, k, v, w, u)]


def make_inputs7(B: int, T: int, H: int, N: int, seed: int = 0) -> list[torch.Tensor]:
    """r, w, k, v, a, b as Goose makes them (see the module docstring); all require grad."""
    g = torch.Generator().manual_seed(seed)
    r, k, v, x = (torch.randn(B, T, H, N, generator=g) for _ in range(4))
    w = -math.exp(-0.5) * torch.sigmoid(x)
    kappa = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    alpha = torch.rand(B, T, H, N, generator=g)
    return [t.requires_grad_() for t in (r, w, k, v, -kappa, kappa * alpha)]


def best_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Best wall time of ``repeats`` calls, in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def time_impl(impl: WkvFn, xs: list[torch.Tensor], repeats: int, warmup: int) -> tuple[float, float]:
    """(forward ms, forward + backward ms) for one implementation."""
    B, T, H, N = xs[0].shape
    g = torch.Generator().manual_seed(1)
    gy, gs = torch.randn(B, T, H, N, generator=g), torch.randn(B, H, N, N, generator=g)

    def fwd() -> None:
        with torch.no_grad():
            impl(*xs)

    def fwd_bwd() -> None:
        y, s = impl(*xs)
        torch.autograd.backward([y, s], [gy, gs])  # dense upstream grads, like a real loss
        for x in xs:
            x.grad = None

    return best_ms(fwd, repeats, warmup), best_ms(fwd_bwd, repeats, warmup)


#: Per op: (heading, input maker, [(name, implementation, timed calls: "ref" or "chunked")]).
def _ops(with_step: bool) -> dict[str, tuple[str, Callable[..., list[torch.Tensor]], list[tuple[str, WkvFn, str]]]]:
    steps7 = [("step", wkv7_recurrent, "ref")] if with_step else []
    return {
        "wkv": (f"WKV (Finch), chunked C={DEFAULT_CHUNK_SIZE} c={DEFAULT_SUB_CHUNK}", make_inputs,
                [("reference", wkv_reference, "ref"), ("chunked", wkv_chunked, "chunked")]),
        "wkv7": (f"WKV-7 (Goose), chunked C={DEFAULT_CHUNK_SIZE7} c={DEFAULT_BLOCK7}", make_inputs7,
                 [("reference", wkv7_reference, "ref"), *steps7, ("chunked", wkv7_chunked, "chunked")]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", nargs="+", choices=("wkv", "wkv7"), default=["wkv", "wkv7"], help="operators")
    ap.add_argument("--seq", type=int, nargs="+", default=[256, 1024], help="sequence lengths T")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls of the chunked form")
    ap.add_argument("--ref-repeats", type=int, default=2, help="timed calls of the reference (and step)")
    ap.add_argument("--with-step", action="store_true", help="also time WKV-7's decode-step loop")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    B, H, N = 1, 12, 64
    for op in args.ops:
        heading, maker, impls = _ops(args.with_step)[op]
        print(f"{heading} on CPU: B={B} H={H} N={N} fp32, {torch.get_num_threads()} threads; best of n, ms")
        print(f"{'T':>6} {'impl':>10} {'fwd':>10} {'fwd+bwd':>10}")
        rows = []
        for T in args.seq:
            xs = maker(B, T, H, N)
            times = {}
            for name, impl, kind in impls:
                reps, warm = (args.ref_repeats, 0) if kind == "ref" else (args.repeats, 2)
                times[name] = time_impl(impl, xs, reps, warmup=warm)
                print(f"{T:>6} {name:>10} {times[name][0]:>10.1f} {times[name][1]:>10.1f}", flush=True)
            ref, chk = times["reference"], times["chunked"]
            rows.append((T, ref[0] / chk[0], ref[1] / chk[1]))
        print(f"{'T':>6} {'speed-up':>10} {'fwd':>10} {'fwd+bwd':>10}   (reference / chunked)")
        for T, sf, sfb in rows:
            print(f"{T:>6} {'':>10} {sf:>9.1f}x {sfb:>9.1f}x")
        print()


if __name__ == "__main__":
    main()
