"""AudioRWKV vs an attention encoder of the same width and depth on 10 s, 30 s and 60 s inputs.

Usage: .venv/bin/python bench/audio_encoder.py [--size T|S] [--version 6] [--seconds 10 30 60]
           [--mode infer|train] [--threads 2] [--device cpu|cuda] [--repeats 3] [--batch 1]

Both encoders read 128-bin fbank frames (100 per second) cut into 16×16 patches (10 s → 62×8 =
496 tokens, 60 s → 2992), add a learned position table (interpolated beyond 10 s), run L
blocks of width D and pool into a 527-class head. AudioRWKV: Q-Shift + bidirectional Finch
(or Eagle) mixing, linear in the number of patches. Attention: a pre-norm ViT/AST block
(LayerNorm, multi-head self-attention through torch's scaled_dot_product_attention with D/64
heads, LayerNorm, MLP 4D with GELU), quadratic in the number of patches.

Each (model, length) runs in its own process. Reported per clip: time (best of --repeats, after
one warm-up) and peak memory above what the model and input already hold — on CUDA from
torch.cuda.max_memory_allocated, on the CPU from the process's peak resident set (VmHWM, reset
before the measured pass). On a shared CPU the times are noisy; compare the growth with length.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

FRAMES_PER_SECOND = 100


class AttentionBlock(nn.Module):
    """Pre-norm transformer block (ViT / AST): x += MHSA(LN(x)); x += MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D]
        B, N, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, D/heads]
        x = x + self.proj(attn.transpose(1, 2).reshape(B, N, D))
        return x + self.mlp(self.ln2(x))


class AttentionEncoder(nn.Module):
    """Same patch embedding, width, depth and head as AudioRWKV; attention blocks instead."""

    def __init__(self, dim: int, depth: int, num_classes: int, frames: int, mels: int) -> None:
        super().__init__()
        from rwkv_mm.audio.encoder import PatchEmbed

        self.patch_embed = PatchEmbed(dim, frames, mels)
        self.blocks = nn.ModuleList(AttentionBlock(dim, max(dim // 64, 1)) for _ in range(depth))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, M] → [B, C]
        h, _ = self.patch_embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h).mean(1))


def build(kind: str, size: str, version: str, frames: int, mels: int = 128) -> nn.Module:
    from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig

    cfg = AudioRWKVConfig.preset(size, version=version, num_classes=527, num_mel_bins=mels, target_frames=frames)
    if kind == "rwkv":
        return AudioRWKV(cfg)
    return AttentionEncoder(cfg.backbone.n_embd, cfg.backbone.n_layer, 527, frames, mels)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> dict:
    """Measure one (model, length) in this process; returns the row as a dict."""
    from rwkv_mm.cpu import tune_malloc

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(args.kind, args.size, args.version, 10 * FRAMES_PER_SECOND).to(device)
    params = sum(p.numel() for p in model.parameters())
    frames = int(args.child_seconds * FRAMES_PER_SECOND)
    x = torch.randn(args.batch, frames, 128, device=device)
    train = args.mode == "train"
    model.train(train)

    def step() -> None:
        if train:
            model(x).float().sum().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    # peak memory of one pass above the resident model + input
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        base = _rss_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        step()
        peak_mb = (_rss_kb("VmHWM") - base) / 1024
        tune_malloc()  # timed passes: reuse memory like the CLI does
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    tokens = model.patch_embed(x[:1])[0].shape[1] if hasattr(model, "patch_embed") else 0
    return {"kind": args.kind, "seconds": args.child_seconds, "tokens": tokens, "params": params,
            "ms_per_clip": 1e3 * min(times) / args.batch, "peak_mb_per_clip": peak_mb / args.batch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="T", help="AudioRWKV preset: T (D192) or S (D384); L=12")
    p.add_argument("--version", default="6", help="6 (Finch) or 5 (Eagle)")
    p.add_argument("--seconds", type=float, nargs="+", default=[10, 30, 60])
    p.add_argument("--mode", choices=("infer", "train"), default="infer", help="forward only, or forward + backward")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.kind:  # a measuring child
        print(json.dumps(child(args)))
        return
    rows = []
    for seconds in args.seconds:
        for kind in ("rwkv", "attention"):
            cmd = [sys.executable, __file__, "--kind", kind, "--child-seconds", str(seconds), "--size", args.size,
                   "--version", args.version, "--mode", args.mode, "--threads", str(args.threads),
                   "--device", args.device, "--repeats", str(args.repeats), "--batch", str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{kind} {seconds:g}s failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    names = {"rwkv": f"AudioRWKV-{args.size} ({'Finch' if args.version == '6' else 'Eagle'})",
             "attention": "attention (SDPA ViT)"}
    print(f"# {args.mode}, batch {args.batch}, device {args.device}, threads {args.threads or torch.get_num_threads()}, "
          f"best of {args.repeats}; peak memory above model + input")
    print(f"{'encoder':26s} {'params':>10s} {'input':>6s} {'patches':>8s} {'ms/clip':>10s} {'peak MB/clip':>13s}")
    for r in rows:
        print(f"{names[r['kind']]:26s} {r['params']:10,d} {r['seconds']:5g}s {r['tokens']:8d} "
              f"{r['ms_per_clip']:10.1f} {r['peak_mb_per_clip']:13.1f}")
    for kind in ("rwkv", "attention"):
        mine = [r for r in rows if r["kind"] == kind]
        if len(mine) >= 2:
            a, b = mine[0], mine[-1]
            print(f"{names[kind]}: {b['seconds'] / a['seconds']:.0f}× longer input → "
                  f"{b['ms_per_clip'] / a['ms_per_clip']:.1f}× time, "
                  f"{b['peak_mb_per_clip'] / max(a['peak_mb_per_clip'], 1e-9):.1f}× peak memory")


if __name__ == "__main__":
    main()
