"""CPU prefill and decode speed: rwkv_mm vs BlinkDL's `rwkv` runtime on the same weights.

Finch (v6), L=12, D=768, World vocabulary, fp32, 1024-token prompt. Both compute the head only
for the last prompt token. Decode: tokens/s at batch 1 from the state after the prompt.

    .venv/bin/python bench/prefill_cpu.py [--prompt-len 1024] [--decode 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from rwkv_mm.backbone import RWKV, RWKVConfig, save_model, to_decode_layout
from rwkv_mm.cpu import tune_malloc


def best_time(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="6")
    parser.add_argument("--n-layer", type=int, default=12)
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--decode", type=int, default=64, help="tokens to decode for tokens/s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-tune-malloc", action="store_true",
                        help="leave glibc malloc at its defaults (the tuning applies to both peers)")
    args = parser.parse_args()
    tuned = False if args.no_tune_malloc else tune_malloc()

    os.environ.setdefault("RWKV_JIT_ON", "1")
    from rwkv.model import RWKV as RuntimeRWKV  # the peer (dev extra)

    torch.manual_seed(0)
    config = RWKVConfig(version=args.version, n_layer=args.n_layer, n_embd=args.n_embd, vocab_size=65536)
    ours = RWKV(config).eval()
    with torch.no_grad():  # App. I zeroes some matrices; perturb so that no work is trivially skipped
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.pth")
        save_model(ours, path)
        theirs = RuntimeRWKV(path, "cpu fp32", verbose=False)
    to_decode_layout(ours)  # what `rwkv-mm generate` does: column-major weights (same values)

    prompt = torch.randint(0, 65536, (1, args.prompt_len), generator=torch.Generator().manual_seed(1))
    prompt_list = prompt[0].tolist()

    with torch.inference_mode():
        def ours_prefill():
            return ours(prompt, last_only=True)

        def theirs_prefill():
            return theirs.forward(prompt_list, None)

        ours_prefill(), theirs.forward(prompt_list[:16], None)  # warm-up (JIT, allocator)
        t_ours = best_time(ours_prefill, args.repeats)
        t_theirs = best_time(theirs_prefill, max(1, args.repeats - 1))

        logits, state = ours_prefill()
        ref_logits, ref_state = theirs_prefill()
        max_diff = (logits[0, -1] - ref_logits).abs().max().item()

        def ours_decode():
            s, tok = state, torch.tensor([[1]])
            for _ in range(args.decode):
                out, s = ours(tok, s)
                tok = out[:, -1].argmax(-1, keepdim=True)

        def theirs_decode():
            s, tok = [t.clone() for t in ref_state], 1
            for _ in range(args.decode):
                out, s = theirs.forward([tok], s)
                tok = int(out.argmax())

        ours_decode(), theirs_decode()
        d_ours = best_time(ours_decode, 2) / args.decode
        d_theirs = best_time(theirs_decode, 2) / args.decode

    n = args.prompt_len
    print(f"\nRWKV-{config.version} L={config.n_layer} D={config.n_embd} V=65536, fp32, "
          f"{torch.get_num_threads()} CPU threads, malloc tuned: {tuned}, prompt {n} tokens; "
          f"max |Δlogit| after prefill = {max_diff:.2e}\n")
    print(f"| {'':22s} | {'rwkv_mm':>12s} | {'rwkv runtime':>12s} | {'speed-up':>8s} |")
    print(f"|{'-' * 24}|{'-' * 14}|{'-' * 14}|{'-' * 10}|")
    print(f"| {'prefill time (s)':22s} | {t_ours:12.3f} | {t_theirs:12.3f} | {t_theirs / t_ours:7.2f}x |")
    print(f"| {'prefill tokens/s':22s} | {n / t_ours:12.1f} | {n / t_theirs:12.1f} | {t_theirs / t_ours:7.2f}x |")
    print(f"| {'decode tokens/s (B=1)':22s} | {1 / d_ours:12.2f} | {1 / d_theirs:12.2f} | "
          f"{d_theirs / d_ours:7.2f}x |")
    print("\ntargets (issue #2): prefill >= 2x, decode >= 1.5x")


if __name__ == "__main__":
    main()
