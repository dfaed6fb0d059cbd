"""CPU benchmark of the WKV operator: chunked form vs the step-by-step reference.

Usage: .venv/bin/python bench/wkv_cpu.py [--seq 256 1024] [--threads 2] [--repeats 10]

Prints best-of-n wall times (the least disturbed by other load on the machine) for the forward
pass and for forward + backward, B=1, H=12, N=64, fp32, Finch-style per-token decays.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[256, 1024], help="sequence lengths T")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls of the chunked form")
    ap.add_argument("--ref-repeats", type=int, default=2, help="timed calls of the reference")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    B, H, N = 1, 12, 64
    print(f"WKV on CPU: B={B} H={H} N={N} fp32, {torch.get_num_threads()} threads, "
          f"chunked C={DEFAULT_CHUNK_SIZE} c={DEFAULT_SUB_CHUNK}; best of n, ms")
    print(f"{'T':>6} {'impl':>10} {'fwd':>10} {'fwd+bwd':>10}")
    rows = []
    for T in args.seq:
        xs = make_inputs(B, T, H, N)
        ref = time_impl(wkv_reference, xs, args.ref_repeats, warmup=0)
        chk = time_impl(wkv_chunked, xs, args.repeats, warmup=2)
        for name, (f, fb) in (("reference", ref), ("chunked", chk)):
            print(f"{T:>6} {name:>10} {f:>10.1f} {fb:>10.1f}", flush=True)
        rows.append((T, ref[0] / chk[0], ref[1] / chk[1]))
    print(f"{'T':>6} {'speed-up':>10} {'fwd':>10} {'fwd+bwd':>10}   (reference / chunked)")
    for T, sf, sfb in rows:
        print(f"{T:>6} {'':>10} {sf:>9.1f}x {sfb:>9.1f}x")


if __name__ == "__main__":
    main()
