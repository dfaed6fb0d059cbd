"""Finch vs Goose vs GoldFinch vs a same-size Llama: small byte-level LMs trained identically on
a text corpus every machine has offline, the Python standard library's source.

Same data, order, steps, batch, schedule and trainer for all four (the same L, D and head size
for the three RWKV families; Llama's SwiGLU width matches GoldFinch's parameter count); prints
the validation loss table (nats per byte and bits per byte). The GoldFinch paper reports
GoldFinch < Finch ≈ Llama at 1.5B parameters, the RWKV-7 paper Goose < Finch; this prints
whatever it measures at a tiny size and budget.

    .venv/bin/python bench/lm_arch.py [--steps 100] [--n-layer 6] [--n-embd 128] [--ctx-len 128]
"""

from __future__ import annotations

import argparse
import sysconfig
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from rwkv_mm.backbone import RWKVConfig, build_backbone
from rwkv_mm.cpu import tune_malloc
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.trainer import Trainer

VOCAB = 256  # bytes


def stdlib_corpus(max_bytes: int) -> tuple[bytes, bytes, int]:
    """(train bytes, validation bytes, files): the top-level .py files of the running Python's
    standard library in name order; every 10th file is validation. Files are joined by a 0 byte."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if not files:
        raise SystemExit("no standard-library .py files found next to this Python")
    train, val = [], []
    for i, f in enumerate(files):
        (val if i % 10 == 0 else train).append(f.read_bytes())
    return b"\0".join(train)[:max_bytes], b"\0".join(val)[:max_bytes // 9], len(files)


class ByteWindows(Dataset):
    """Non-overlapping windows of ctx_len + 1 bytes: input ids and next-byte targets."""

    def __init__(self, data: bytes, ctx_len: int, max_windows: int = 0) -> None:
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        self.ctx = ctx_len
        n = (len(self.data) - 1) // ctx_len
        self.n = min(n, max_windows) if max_windows else n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i * self.ctx:(i + 1) * self.ctx + 1]


def collate(windows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    batch = torch.stack(windows)  # [B, T + 1]
    return {"input_ids": batch[:, :-1], "targets": batch[:, 1:]}


class LlamaLM(nn.Module):
    """transformers' LlamaForCausalLM (RoPE, SwiGLU, RMSNorm) behind `logits, state = model(tokens)`
    (and `return_hidden=True` + `head`, what the trainer's chunked LM loss uses)."""

    def __init__(self, n_layer: int, n_embd: int, head_size: int, ffn: int, ctx_len: int) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        heads = n_embd // head_size
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=n_embd, intermediate_size=ffn,
                          num_hidden_layers=n_layer, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=ctx_len, tie_word_embeddings=False)
        self.llama = LlamaForCausalLM(cfg)

    @property
    def head(self) -> nn.Module:
        return self.llama.lm_head

    def forward(self, tokens: torch.Tensor, return_hidden: bool = False):
        hidden = self.llama.model(input_ids=tokens).last_hidden_state  # [B, T, D] after the final norm
        return (hidden if return_hidden else self.head(hidden)), None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def llama_ffn_matching(target: int, n_layer: int, n_embd: int, head_size: int, ctx_len: int) -> int:
    """The SwiGLU width (multiple of 32) whose Llama has the parameter count closest to `target`."""
    with torch.device("meta"):
        base = n_params(LlamaLM(n_layer, n_embd, head_size, 32, ctx_len))
    per_32 = 3 * n_embd * 32 * n_layer  # gate, up and down projections
    k = max(1, round((target - base) / per_32) + 1)
    return 32 * k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ctx-len", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--head-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-bytes", type=int, default=4_000_000)
    parser.add_argument("--val-windows", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="1 by default: on a shared CPU, 2 OpenMP threads spin while the other "
                             "is descheduled, which makes the run slower and its timing meaningless")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="subset of: finch goose goldfinch llama")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()

    train_bytes, val_bytes, n_files = stdlib_corpus(args.max_bytes)
    train_set = ByteWindows(train_bytes, args.ctx_len)
    val_set = ByteWindows(val_bytes, args.ctx_len, args.val_windows)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, lr_final=args.lr / 10,
                      warmup_steps=max(args.steps // 15, 1), eval_every=0,
                      eval_batches=-(-len(val_set) // args.batch_size), save_every=0,
                      log_every=max(args.steps // 5, 1), seed=args.seed, l2wrap=False, precision="fp32")

    def rwkv(version: str) -> nn.Module:
        torch.manual_seed(args.seed)
        return build_backbone(RWKVConfig(version=version, n_layer=args.n_layer, n_embd=args.n_embd,
                                         vocab_size=VOCAB, head_size=args.head_size))

    builders = {"Finch": lambda: rwkv("6"), "Goose": lambda: rwkv("7"), "GoldFinch": lambda: rwkv("goldfinch")}
    try:
        ffn = llama_ffn_matching(n_params(rwkv("goldfinch")), args.n_layer, args.n_embd, args.head_size,
                                 args.ctx_len)

        def llama() -> nn.Module:
            torch.manual_seed(args.seed)
            return LlamaLM(args.n_layer, args.n_embd, args.head_size, ffn, args.ctx_len)

        builders[f"Llama (ffn {ffn})"] = llama
    except ImportError:
        print("transformers is not installed: skipping the Llama peer (pip install transformers)")
    if args.only:
        builders = {k: v for k, v in builders.items() if k.split()[0].lower() in args.only}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in builders.items():
            model = build()
            losses: list[float] = []
            trainer = Trainer(model, cfg, Path(tmp) / name.split()[0], train_set, collate,
                              eval_set=val_set, device="cpu")
            start = time.perf_counter()
            trainer.fit(on_step=lambda _t, rec: losses.append(rec["loss"]))
            wall = time.perf_counter() - start
            tail = losses[-max(len(losses) // 10, 1):]
            val = trainer.evaluate()
            rows.append((name, n_params(model), sum(tail) / len(tail), val, wall))

    tokens = args.steps * args.batch_size * args.ctx_len
    print(f"\nPython stdlib source as bytes ({n_files} files; {len(train_bytes):,} train / "
          f"{len(val_set) * args.ctx_len:,} validation bytes), {args.steps} steps × {args.batch_size} × "
          f"{args.ctx_len} = {tokens:,} training bytes, L={args.n_layer} D={args.n_embd} "
          f"head {args.head_size}, lr {args.lr}, CPU fp32, {args.threads} threads\n")
    print(f"| {'model':16s} | {'params':>9s} | {'train loss':>10s} | {'val loss':>8s} | {'val bits/byte':>13s} "
          f"| {'time (s)':>8s} |")
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 12}|{'-' * 10}|{'-' * 15}|{'-' * 10}|")
    for name, params, train_loss, val_loss, wall in rows:
        print(f"| {name:16s} | {params:9,d} | {train_loss:10.4f} | {val_loss:8.4f} | "
              f"{val_loss / 0.6931471805599453:13.3f} | {wall:8.1f} |")


if __name__ == "__main__":
    main()
