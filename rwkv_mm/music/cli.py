"""`rwkv-mm music generate` and `rwkv-mm music eval-positions` (the `music` group's commands,
registered through `rwkv_mm.music.modality`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rwkv_mm.cli_types import (non_negative_float, non_negative_int, open_probability,
                               positive_int, seed)
from rwkv_mm.training.adapter_cli import add_adapter_argument


def _load_music_model(path: str):
    """The byte-level model at `path`; a UserError naming the file if it is not one (V != 128)."""
    from rwkv_mm.backbone import load_model
    from rwkv_mm.errors import UserError

    from .tokenizer import VOCAB_SIZE

    model = load_model(path)
    if model.config.vocab_size != VOCAB_SIZE:
        raise UserError(f"vocab_size {model.config.vocab_size}, not a byte-level music model "
                        f"(V={VOCAB_SIZE})", where=path,
                        fix="pass a model trained by the lm_music runner (runs/<recipe>/model.pth)")
    return model


def _cmd_generate(args: argparse.Namespace) -> int:
    from rwkv_mm.backbone import SamplingConfig, to_decode_layout
    from rwkv_mm.cpu import tune_malloc
    from rwkv_mm.training.adapter_cli import apply_adapter

    from .generate import generate_tunes
    from .scoring import parse_tune, write_abc_and_midi

    tune_malloc()
    model = to_decode_layout(apply_adapter(_load_music_model(args.checkpoint), args.adapter))
    codes = args.control_codes.replace("\\n", "\n")
    if codes and not codes.endswith("\n"):
        codes += "\n"
    prompt = codes + args.prompt.replace("\\n", "\n")  # control codes first, as in IrishMAN
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    good = 0

    def report(i: int, text: str) -> None:
        nonlocal good
        write_abc_and_midi(text, out / f"tune_{i:03d}")
        ok, bars, err = parse_tune(text)
        good += ok and bars >= args.min_bars
        status = f"{bars} bars" if ok else f"does not parse ({err})"
        print(f"tune {i:3d}: {len(text):5d} bytes, {status}")

    generate_tunes(model, args.n, prompt, sampling, args.max_bytes, args.seed, on_tune=report)
    print(f"{good}/{args.n} tunes parse into a score with >= {args.min_bars} bars; files in {out}/")
    return 0


def _cmd_eval_positions(args: argparse.Namespace) -> int:
    from .corpus import load_tunes
    from .positions import gaussian_smooth, per_position_loss, plot_position_curves
    from .tokenizer import ByteTokenizer
    from rwkv_mm.shipped import resolve_shipped

    tunes, _ = load_tunes(resolve_shipped(args.tunes))  # CorpusError (exit 2) when the file holds no tune
    tunes = tunes[: args.max_tunes] if args.max_tunes > 0 else tunes
    tok = ByteTokenizer()
    seqs = [tok.encode_tune(t) for t in tunes]
    curves = {}
    for path in args.checkpoint:
        model = _load_music_model(path)
        mean, count = per_position_loss(model, seqs, args.max_len, args.batch_size)
        curves[Path(path).stem] = gaussian_smooth(mean, args.sigma)
        print(f"{path}: mean loss over the first {args.max_len} positions "
              f"{float((mean[count > 0] * count[count > 0]).sum() / count.sum()):.4f} nats/byte "
              f"({len(seqs)} tunes)")
    out = plot_position_curves(curves, args.out)
    print(f"plot: {out}")
    return 0


def add_commands(sub) -> None:
    """Register `generate` and `eval-positions` on `sub` (the `music` group's subparsers)."""
    g = sub.add_parser("generate", help="sample tunes from a byte-level model; writes .abc and .mid")
    g.add_argument("--checkpoint", required=True)
    add_adapter_argument(g)
    g.add_argument("--n", type=positive_int, default=10, help="number of tunes")
    g.add_argument("--control-codes", default="", help='IrishMAN control codes, e.g. "S:2\\nB:9\\nE:4\\nB:9"')
    g.add_argument("--prompt", default="", help='ABC header to start from, e.g. "L:1/8\\nM:6/8\\nK:G\\n"')
    g.add_argument("--top-k", type=non_negative_int, default=8, help="0 = off")
    g.add_argument("--top-p", type=open_probability, default=0.8, help="in (0, 1]; 1 = off")
    g.add_argument("--temperature", type=non_negative_float, default=1.0, help="0 = greedy")
    g.add_argument("--max-bytes", type=positive_int, default=1024)
    g.add_argument("--min-bars", type=non_negative_int, default=4)
    g.add_argument("--seed", type=seed, default=0)
    g.add_argument("--out", default="runs/music_tunes")
    g.set_defaults(func=_cmd_generate)

    e = sub.add_parser("eval-positions", help="loss at every position of held-out tunes (paper Fig. 8)")
    e.add_argument("--checkpoint", nargs="+", required=True, help="one or more models, one curve each")
    e.add_argument("--tunes", default="pkg:data/music/validation.json",
                   help="IrishMAN JSON, .abc file or folder (default: the bundled validation tunes)")
    e.add_argument("--max-len", type=positive_int, default=1024)
    e.add_argument("--max-tunes", type=non_negative_int, default=0, help="0 = all")
    e.add_argument("--sigma", type=non_negative_float, default=10.0,
                   help="Gaussian smoothing width (positions; 0 = none)")
    e.add_argument("--batch-size", type=positive_int, default=16)
    e.add_argument("--out", default="runs/music_positions.png")
    e.set_defaults(func=_cmd_eval_positions)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `rwkv-mm music ...`")
