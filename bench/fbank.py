"""Batched Kaldi fbank (rwkv_mm.audio.fbank.KaldiFbank) vs torchaudio's per-clip Kaldi fbank.

Usage: .venv/bin/python bench/fbank.py [--clips 64] [--seconds 10] [--batch 32] [--threads 2]
                                       [--device cpu|cuda] [--mels 128] [--repeats 3]

Both compute AST's features (16 kHz, 128 mel, 25/10 ms, hanning, no dither) for `--clips`
clips of noise + tones. The reference calls torchaudio.compliance.kaldi.fbank once per clip
(as AST's dataset does); ours runs batches of `--batch` clips, with its compiled C loops
(on the CPU) and with torch operations only (its fallback). Prints clips/s of each (best of
`--repeats` passes, the least disturbed by other load), the CPU time per clip of this process
(less sensitive to other processes on a shared machine than wall time) and the max |difference|
over all clips.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from rwkv_mm.audio.fbank import FbankConfig, KaldiFbank, reference_fbank
from rwkv_mm.cpu import tune_malloc


def make_clips(n: int, seconds: float, sr: int, seed: int = 0) -> torch.Tensor:
    """[n, seconds·sr]: noise at random levels plus a few tones each."""
    g = torch.Generator().manual_seed(seed)
    L = int(seconds * sr)
    t = torch.arange(L) / sr
    clips = 0.05 * torch.randn(n, L, generator=g) * torch.rand(n, 1, generator=g)
    for _ in range(3):
        f = 100 + 4000 * torch.rand(n, 1, generator=g)
        clips += 0.2 * torch.rand(n, 1, generator=g) * torch.sin(2 * math.pi * f * t)
    return clips


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_seconds(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """(best wall seconds, best process CPU seconds) over `repeats` calls after a warm-up."""
    fn()  # warm-up (plans, caches)
    sync(device)
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mels", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_malloc()  # as the CLI does: reuse freed memory instead of page-faulting fresh memory
    device = torch.device(args.device)
    cfg = FbankConfig(num_mel_bins=args.mels)
    clips = make_clips(args.clips, args.seconds, cfg.sample_rate).to(device)
    ours = KaldiFbank(cfg).to(device)
    torch_only = KaldiFbank(cfg, native=False).to(device)  # the fallback without the C loops

    refs: list[torch.Tensor] = []

    def per_clip() -> None:
        refs.clear()
        refs.extend(reference_fbank(c, cfg) for c in clips)

    outs: list[torch.Tensor] = []

    def batched(fbank: KaldiFbank) -> None:
        outs.clear()
        with torch.no_grad():
            outs.extend(fbank(clips[i:i + args.batch]) for i in range(0, len(clips), args.batch))

    w_ref, c_ref = best_seconds(per_clip, args.repeats, device)
    w_tor, c_tor = best_seconds(lambda: batched(torch_only), args.repeats, device)
    w_ours, c_ours = best_seconds(lambda: batched(ours), args.repeats, device)  # last: `outs` are ours
    diff = (torch.cat(outs) - torch.stack(refs)).abs().max().item()
    n = args.clips
    print(f"# {n} clips × {args.seconds:g} s, {args.mels} mel, device {device}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, best of {args.repeats}")
    print(f"{'implementation':36s} {'clips/s':>9s} {'wall ms/clip':>13s} {'CPU ms/clip':>12s}")
    print(f"{'torchaudio kaldi.fbank, per clip':36s} {n / w_ref:9.1f} {1e3 * w_ref / n:13.2f} {1e3 * c_ref / n:12.2f}")
    print(f"{'KaldiFbank, batched':36s} {n / w_ours:9.1f} {1e3 * w_ours / n:13.2f} {1e3 * c_ours / n:12.2f}")
    print(f"{'KaldiFbank, batched, torch ops only':36s} {n / w_tor:9.1f} {1e3 * w_tor / n:13.2f} {1e3 * c_tor / n:12.2f}")
    print(f"speed-up {w_ref / w_ours:.2f}× (wall), {c_ref / c_ours:.2f}× (CPU time)   "
          f"max |difference| {diff:.3g} (log-mel)")


if __name__ == "__main__":
    main()
