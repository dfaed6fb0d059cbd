"""Eagle vs Finch vs Goose vs GPT-2 of about the same size on the bundled ABC corpus (paper §10.1).

Same data, steps, batch, schedule and trainer for all four (the same L and D for the three RWKV
families; GPT-2's width matches Eagle's parameter count); prints the validation loss table.
The paper reports Finch < Eagle on music; this prints whatever it measures.

    .venv/bin/pip install transformers   # the GPT-2 peer
    .venv/bin/python bench/music_arch.py [--steps 150] [--n-layer 4] [--n-embd 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from rwkv_mm.backbone import RWKVConfig, build_backbone
from rwkv_mm.cpu import tune_malloc
from rwkv_mm.music.corpus import TuneDataset, collate_tunes, load_tunes
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


class GPT2Adapter(nn.Module):
    """transformers' GPT2LMHeadModel behind the backbone's `logits, state = model(tokens)` call
    (and `return_hidden=True` + `head`, what the trainer's chunked LM loss uses)."""

    def __init__(self, n_layer: int, n_embd: int, ctx_len: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=128, n_positions=ctx_len, n_embd=n_embd, n_layer=n_layer,
                         n_head=max(n_embd // 64, 1), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        self.gpt2 = GPT2LMHeadModel(cfg)

    @property
    def head(self) -> nn.Module:
        return self.gpt2.lm_head

    def forward(self, tokens: torch.Tensor, return_hidden: bool = False):
        hidden = self.gpt2.transformer(input_ids=tokens).last_hidden_state  # [B, T, D] after ln_f
        return (hidden if return_hidden else self.head(hidden)), None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gpt2_width_matching(target: int, n_layer: int, ctx_len: int) -> int:
    """The GPT-2 width (multiple of 64) whose parameter count is closest to `target`."""
    best = None
    for width in range(64, 1025, 64):
        n = n_params(GPT2Adapter(n_layer, width, ctx_len))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
    return best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ctx-len", type=int, default=256)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tune_malloc()

    train_tunes, _ = load_tunes(ROOT / "data/music/train.json")
    val_tunes, _ = load_tunes(ROOT / "data/music/validation.json")
    train_set = TuneDataset(train_tunes, args.ctx_len)
    val_set = TuneDataset(val_tunes, args.ctx_len)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, lr_final=args.lr / 10,
                      warmup_steps=max(args.steps // 15, 1), eval_every=0, eval_batches=len(val_set),
                      save_every=0, log_every=50, seed=args.seed, l2wrap=False)

    def rwkv(version: str) -> nn.Module:
        torch.manual_seed(args.seed)
        return build_backbone(RWKVConfig(version=version, n_layer=args.n_layer, n_embd=args.n_embd,
                                         vocab_size=128, head_size=32))

    eagle_params = n_params(rwkv("5"))
    builders = {
        "Eagle (RWKV-5)": lambda: rwkv("5"),
        "Finch (RWKV-6)": lambda: rwkv("6"),
        "Goose (RWKV-7)": lambda: rwkv("7"),
    }
    try:
        width = gpt2_width_matching(eagle_params, args.n_layer, args.ctx_len)

        def gpt2():
            torch.manual_seed(args.seed)
            return GPT2Adapter(args.n_layer, width, args.ctx_len)

        builders[f"GPT-2 (D={width})"] = gpt2
    except ImportError:
        print("transformers is not installed: skipping the GPT-2 peer (pip install transformers)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in builders.items():
            model = build()
            trainer = Trainer(model, cfg, Path(tmp) / name.split()[0], train_set, collate_tunes,
                              eval_set=val_set, device="cpu")
            start = time.perf_counter()
            summary = trainer.fit()
            wall = time.perf_counter() - start
            rows.append((name, n_params(model), summary["train_loss"], trainer.evaluate(), wall))

    print(f"\nABC music, bundled corpus ({len(train_set)} train / {len(val_set)} validation tunes), "
          f"{args.steps} steps × {args.batch_size} tunes, ctx {args.ctx_len}, L={args.n_layer}, CPU fp32\n")
    print(f"| {'model':18s} | {'params':>9s} | {'train loss':>10s} | {'val loss':>8s} | {'time (s)':>8s} |")
    print(f"|{'-' * 20}|{'-' * 11}|{'-' * 12}|{'-' * 10}|{'-' * 10}|")
    for name, params, train_loss, val_loss, wall in rows:
        print(f"| {name:18s} | {params:9,d} | {train_loss:10.4f} | {val_loss:8.4f} | {wall:8.1f} |")


if __name__ == "__main__":
    main()
