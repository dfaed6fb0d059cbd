"""`rwkv-mm quickstart`: train tiny models of every modality on bundled data and show results.

Each modality adds one entry to `PARTS` (a shipped tiny recipe); the whole run must stay under
about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rwkv_mm.errors import UserError

#: (title, shipped recipe name, summary keys to show, overrides; "{out}" = the quickstart folder)
PARTS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("ABC music (byte-level Eagle)", "music/abc_tiny", ("train_loss", "val_loss", "parse_rate", "tunes_dir"), ()),
    ("VisualRWKV stage 1 (projector)", "visual/stage1_tiny", ("train_loss", "model_dir"), ()),
    ("VisualRWKV stage 2 (projector + LM) + GQA/POPE-format eval", "visual/stage2_tiny",
     ("train_loss", "gqa_accuracy", "pope_accuracy", "pope_f1", "pope_yes_ratio", "model_dir"),
     ("init_from={out}/stage1_tiny/model",)),
    ("AudioRWKV (Q-Shift bidirectional Finch) sound-event tagging", "audio/synth_tiny",
     ("train_loss", "mAP", "AUC"), ()),
]


def run_quickstart(out_dir: Path, overrides: list[str]) -> list[tuple[str, dict]]:
    """Run every part's tiny recipe into `out_dir/<part>`; returns (title, summary) pairs.

    A part's folder from an earlier quickstart (only files a run writes) is replaced; a folder
    holding anything else is refused before any part trains."""
    from rwkv_mm.cpu import tune_malloc
    from rwkv_mm.recipe import load_recipe
    from rwkv_mm.training.run_dir import classify, run_recipe

    tune_malloc()
    results = []
    names = [name for _, name, _, _ in PARTS]
    for item in overrides:
        if ":" in item.split("=", 1)[0] and item.split(":", 1)[0] not in names:
            raise UserError(f"override {item!r}: no quickstart part is named {item.split(':', 1)[0]!r}; "
                             f"parts: {', '.join(names)}")
    for _, name, _, _ in PARTS:  # refuse at once, not after the parts before it have trained
        run_dir = out_dir / Path(name).name
        foreign = classify(run_dir)[1] if run_dir.is_dir() else []
        if foreign:
            raise UserError(f"the quickstart folder holds a file no run writes "
                            f"({foreign[0].relative_to(run_dir)})", where=str(run_dir),
                            fix="move it away, or pass another --out")
    for title, name, _, part_overrides in PARTS:
        own = [o.replace("{out}", str(out_dir)) for o in part_overrides]
        mine = [o.split(":", 1)[1] if ":" in o.split("=", 1)[0] else o for o in overrides
                if ":" not in o.split("=", 1)[0] or o.split(":", 1)[0] == name]
        recipe = load_recipe(name, [*own, *mine])
        run_dir = out_dir / Path(name).name
        print(f"\n=== {title}: recipe {recipe.source} → {run_dir}")
        start = time.perf_counter()
        summary = run_recipe(recipe, run_dir, existing="replace_own")
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        results.append((title, summary))
    return results


def _cmd_quickstart(args: argparse.Namespace) -> int:
    results = run_quickstart(Path(args.out), args.overrides)
    print("\n=== quickstart summary")
    for (title, _, keys, _), (_, summary) in zip(PARTS, results):
        print(f"{title}  ({summary['wall_s']} s)")
        for key in keys:
            value = summary.get(key)
            text = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(f"  {key:12s} {text}")
    return 0


def add_quickstart_parser(sub) -> None:
    """Register `rwkv-mm quickstart`."""
    q = sub.add_parser("quickstart", help="train tiny models of every modality on bundled data (~10 min on 2 CPUs)")
    q.add_argument("--out", default="runs/quickstart", help="where runs, tunes and plots go")
    q.add_argument("overrides", nargs="*",
                   help="key=value overrides for every part, or RECIPE:key=value for one part "
                        "(e.g. music/abc_tiny:generate.n_tunes=5)")
    q.set_defaults(func=_cmd_quickstart)
