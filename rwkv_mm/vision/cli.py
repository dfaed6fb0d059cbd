"""`rwkv-mm vision chat` and `rwkv-mm vision eval gqa|pope` (also as `rwkv-mm chat`, `rwkv-mm eval`).

Only argparse and the flag types are imported here; each command imports its module (torch,
the vision tower) when it runs.
"""

from __future__ import annotations

import argparse

from rwkv_mm.cli_types import non_negative_float, non_negative_int, positive_int, probability, seed
from rwkv_mm.training.adapter_cli import add_adapter_argument


def _chat(args: argparse.Namespace) -> int:
    from .chat import _cmd_chat

    return _cmd_chat(args)


def _gqa(args: argparse.Namespace) -> int:
    from .evaluate import _cmd_gqa

    return _cmd_gqa(args)


def _pope(args: argparse.Namespace) -> int:
    from .evaluate import _cmd_pope

    return _cmd_pope(args)


def add_chat_parser(sub) -> None:
    """Register `chat` on `sub`."""
    c = sub.add_parser("chat", help="chat about an image with a VisualRWKV model (one-shot or interactive)")
    c.add_argument("--checkpoint", required=True,
                   help="a VisualRWKV model folder (a stage's <run>/model) or a released VisualRWKV .pth")
    add_adapter_argument(c)
    c.add_argument("--image", help="the image to talk about (omit for text only)")
    c.add_argument("--prompt", help="one question, answered once; without it the chat is interactive")
    c.add_argument("--max-tokens", type=positive_int, default=256)
    c.add_argument("--temperature", type=non_negative_float, default=1.0, help="0 = greedy")
    c.add_argument("--top-p", type=probability, default=0.0, help="0 = greedy (default)")
    c.add_argument("--top-k", type=non_negative_int, default=0, help="0 = off")
    c.add_argument("--seed", type=seed, default=None)
    c.set_defaults(func=_chat)


def add_eval_parser(sub) -> None:
    """Register `eval gqa` and `eval pope` on `sub`."""
    e = sub.add_parser("eval", help="evaluate a VisualRWKV model on GQA or POPE (resumable, image-state cache)")
    bench = e.add_subparsers(dest="benchmark", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True, help="VisualRWKV model folder or released .pth")
        add_adapter_argument(p)
        p.add_argument("--images", required=True, help="image folder (GQA images / COCO val2014)")
        p.add_argument("--batch-size", type=positive_int, default=8, help="questions decoded together")
        p.add_argument("--max-new-tokens", type=positive_int, default=16)
        p.add_argument("--no-cache", action="store_true", help="re-encode the image for every question")
        p.add_argument("--limit", type=non_negative_int, default=0,
                       help="only the first N questions (per split; 0 = all)")
        p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                       help="an unreadable image: stop with an error naming it (raise), or leave its "
                            "questions out of the score and list them in the summary (skip)")

    g = bench.add_parser("gqa", help="GQA testdev-balanced: answers JSONL + exact-match accuracy")
    common(g)
    g.add_argument("--questions", required=True,
                   help="llava_gqa_testdev_balanced_questions.jsonl or the official testdev_balanced_questions.json")
    g.add_argument("--answers", required=True, help="answers JSONL (appended; reruns resume)")
    g.add_argument("--official", help="official testdev_balanced_questions.json (answers) for scoring")
    g.set_defaults(func=_gqa)

    p = bench.add_parser("pope", help="POPE random/popular/adversarial: acc, P, R, F1, yes-ratio, chart")
    common(p)
    p.add_argument("--questions", required=True, nargs="+",
                   help="a folder with coco_pope_{random,popular,adversarial}.json, or the files")
    p.add_argument("--answers", required=True, help="output folder (<split>.jsonl, summary, chart)")
    p.set_defaults(func=_pope)


def add_commands(sub) -> None:
    """Register the vision commands on `sub` (the `vision` group's subparsers)."""
    add_chat_parser(sub)
    add_eval_parser(sub)
