"""GoldFinch's compressed key cache vs a Llama-style KV cache, and GoldFinch prefill vs a full
forward pass on the CPU.

Part 1 (sizes): per token, a Llama-style transformer of the same L and D caches K and V in every
layer: 2·L·D values. GoldFinch caches one token id and D/16 numbers (its compressed keys; the
values are rebuilt from the ids), plus a fixed-size RNN state that does not grow. With bf16
values and int32 ids (the paper's accounting) that is 756× smaller at L24 D2048. The table is
computed from the configs; then a real model's `GoldFinchState.cache_nbytes()` after a prefill
is checked against the same formula at our runtime dtypes (fp32 values, int64 ids).

Part 2 (timing, CPU, one thread by default; noisy on a shared machine): prefill (`last_only=True`: the Finch-C2 stack
over every position, GOLD only over the last 2·n_gold+1) vs a full forward (every layer at every
position; once with logits everywhere, once with the head on the last position only), and the
time of one decoding step at that context with and without the GOLD key/value memo.

    .venv/bin/python bench/goldfinch_cache.py [--n-layer 12 --n-embd 256 --lengths 256 1024 2048]
"""

from __future__ import annotations

import argparse
import time

import torch

from rwkv_mm.backbone import GoldFinch, RWKVConfig
from rwkv_mm.cpu import tune_malloc

CONTEXTS = (65536, 262144)
# (name, L, D): the paper's 1.5B size, a 7B-class width, and a 70B-class (Llama-2-70B-like) size
SIZES = (("L24 D2048 (1.5B class)", 24, 2048), ("L32 D4096 (7B class)", 32, 4096),
         ("L80 D8192 (70B class)", 80, 8192))


def llama_bytes_per_token(L: int, D: int, value_bytes: int = 2) -> int:
    """K and V of every layer (full multi-head attention, no GQA)."""
    return 2 * L * D * value_bytes


def goldfinch_bytes_per_token(config: RWKVConfig, value_bytes: int = 2, id_bytes: int = 4) -> int:
    """One token id + the compressed keys (D/16 values)."""
    return id_bytes + config.key_cache_dim * value_bytes


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def size_table() -> None:
    print("## Cache per token and in total (bf16 values, int32 token ids)\n")
    print("| model | Llama KV / token | GoldFinch / token | ratio | Llama @64k | GoldFinch @64k "
          "| Llama @256k | GoldFinch @256k | GoldFinch fixed RNN state |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, L, D in SIZES:
        cfg = RWKVConfig(version="goldfinch", n_layer=L, n_embd=D, vocab_size=65536)
        llama, gf = llama_bytes_per_token(L, D), goldfinch_bytes_per_token(cfg)
        totals = [(_gib(llama * T), _gib(gf * T)) for T in CONTEXTS]
        print(f"| {name} | {llama:,} B | {gf:,} B | {llama / gf:,.1f}× | {totals[0][0]} | {totals[0][1]} "
              f"| {totals[1][0]} | {totals[1][1]} | {_gib(cfg.state_numel() * 2)} |")
    print("\n(values only, ids not counted: the ratio is 2·L·D / (D/16) = 32·L: "
          + ", ".join(f"{32 * L}×" for _, L, _ in SIZES) + ")\n")


@torch.inference_mode()
def measured_cache(model: GoldFinch, T: int) -> None:
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (1, T))
    _, state = model(tokens, last_only=True)
    compact = state.cache_nbytes()
    expected = T * (8 + 4 * cfg.key_cache_dim)  # int64 id + fp32 compressed keys
    llama = T * llama_bytes_per_token(cfg.n_layer, cfg.n_embd, value_bytes=4)
    memo = state.cache_nbytes(include_memo=True) - compact
    print(f"## Measured on a real model (L{cfg.n_layer} D{cfg.n_embd}, fp32, T={T})\n")
    print(f"- GoldFinchState.cache_nbytes(): {compact:,} B = T·(8 + 4·{cfg.key_cache_dim}) = {expected:,} B "
          f"({'matches' if compact == expected else 'DIFFERS from'} the formula)")
    print(f"- fixed RNN part (shift states + Finch-C2 WKV states): {state.fixed_nbytes():,} B, any T")
    print(f"- same-size Llama KV cache at fp32: {llama:,} B ({llama / compact:,.1f}× the GoldFinch cache)")
    print(f"- optional GOLD K/V memo kept for fast decoding: {memo:,} B "
          f"(2·n_gold·D = {2 * cfg.n_gold_layer * cfg.n_embd} values/token; `state.compact()` drops it)\n")


def _best_time(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of the fastest of `repeats` calls. On a shared machine
    the CPU time (both threads together) is the steadier of the two."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def _fmt(t: tuple[float, float], scale: float = 1.0, unit: str = "") -> str:
    return f"{t[0] * scale:.3g}{unit} ({t[1] * scale:.3g}{unit})"


@torch.inference_mode()
def timing_table(model: GoldFinch, lengths: list[int], repeats: int, decode_steps: int) -> None:
    cfg = model.config
    print(f"## Prefill vs full forward, CPU fp32, {torch.get_num_threads()} threads "
          f"(L{cfg.n_layer} D{cfg.n_embd} V{cfg.vocab_size}, {cfg.n_gold_layer} GOLD layers; "
          f"best of {repeats}; wall seconds, process CPU seconds in parentheses)\n")
    print("| T | prefill (last_only) | full forward, head at last | full forward, all logits "
          "| decode step, memo | decode step, compact cache |")
    print("|---:|---:|---:|---:|---:|---:|")
    model(torch.randint(0, cfg.vocab_size, (1, 64)))  # warm-up (allocator, thread pool)
    for T in lengths:
        tokens = torch.randint(0, cfg.vocab_size, (1, T))
        t_prefill = _best_time(lambda: model(tokens, last_only=True), repeats)
        t_hidden = _best_time(lambda: model.head(model(tokens, return_hidden=True)[0][:, -1]), repeats)
        t_full = _best_time(lambda: model(tokens), repeats)
        _, state = model(tokens, last_only=True)
        nxt = torch.randint(0, cfg.vocab_size, (1, 1))
        model(nxt, state)  # warm-up
        t_memo = _best_time(lambda: model(nxt, state), decode_steps)
        compact = state.compact()
        t_compact = _best_time(lambda: model(nxt, compact), decode_steps)
        print(f"| {T} | {_fmt(t_prefill)} | {_fmt(t_hidden)} | {_fmt(t_full)} "
              f"| {_fmt(t_memo, 1e3, ' ms')} | {_fmt(t_compact, 1e3, ' ms')} |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=12)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=65536)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="1 by default: on a shared CPU, 2 OpenMP threads spin while the other "
                             "is descheduled and both clocks become meaningless")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()
    size_table()
    torch.manual_seed(args.seed)
    model = GoldFinch(RWKVConfig(version="goldfinch", n_layer=args.n_layer, n_embd=args.n_embd,
                                 head_size=args.head_size, vocab_size=args.vocab_size)).eval()
    measured_cache(model, args.lengths[0])
    timing_table(model, args.lengths, args.repeats, args.decode_steps)


if __name__ == "__main__":
    main()
