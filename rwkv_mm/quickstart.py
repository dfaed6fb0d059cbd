"""`rwkv-mm quickstart`: train tiny models of every modality on bundled data and show results.

The parts are the modalities' `QuickstartPart`s (declared in each `rwkv_mm/<modality>/modality.py`,
run in modality order); the whole run must stay under about 10 minutes on 2 CPU cores. Everything
is written under `--out` (default `runs/quickstart/` in the working folder), generated data under
`runs/data/`; shipped data is read where rwkv_mm is installed (`rwkv_mm.shipped`). The summary,
with the machine it ran on, is also written as `<out>/quickstart_summary.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rwkv_mm.modalities import QuickstartPart, modalities, quickstart_parts

SUMMARY_NAME = "quickstart_summary.json"


def select_parts(only: list[str] | tuple[str, ...] = ()) -> list[QuickstartPart]:
    """The parts to run: all, or those of the modalities named in `only`."""
    from rwkv_mm.errors import UserError

    if not only:
        return quickstart_parts()
    known = {m.name: m for m in modalities()}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UserError(f"--only {unknown[0]}: no modality is named {unknown[0]!r}",
                        fix=f"modalities: {', '.join(known)}")
    return [part for part in quickstart_parts() if any(part in known[name].quickstart for name in only)]


def _overrides_for(part: QuickstartPart, overrides: list[str]) -> list[str]:
    """The user's overrides that apply to `part`: `key=value` (every part) and `RECIPE:key=value`
    with this part's recipe, prefix removed."""
    mine = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if ":" not in key:
            mine.append(item)
        elif item.split(":", 1)[0] == part.recipe:
            mine.append(item.split(":", 1)[1])
    return mine


def _check(parts: list[QuickstartPart], out_dir: Path, overrides: list[str]) -> None:
    """Refuse at once, not after earlier parts have trained: an override for a part that does
    not exist, a part folder holding a file that no run writes."""
    from rwkv_mm.errors import UserError
    from rwkv_mm.training.run_dir import classify

    names = [part.recipe for part in quickstart_parts()]
    for item in overrides:
        if ":" in item.split("=", 1)[0] and item.split(":", 1)[0] not in names:
            raise UserError(f"override {item!r}: no quickstart part is named {item.split(':', 1)[0]!r}; "
                            f"parts: {', '.join(names)}")
    for part in parts:
        run_dir = out_dir / part.folder
        foreign = classify(run_dir)[1] if run_dir.is_dir() else []
        if foreign:
            raise UserError(f"the quickstart folder holds a file no run writes "
                            f"({foreign[0].relative_to(run_dir)})", where=str(run_dir),
                            fix="move it away, or pass another --out")


def machine_info() -> dict[str, Any]:
    """What a recorded time depends on: cores, load, library versions, the date."""
    import torch

    import rwkv_mm

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "cpus_usable": usable, "load_average": _load_average(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "platform": platform.platform(), "rwkv_mm": rwkv_mm.__version__}


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def write_summary(out_dir: Path, record: dict[str, Any]) -> Path:
    """Write `record` as `<out_dir>/quickstart_summary.json` (atomically)."""
    from rwkv_mm.backbone import atomic_write

    text = json.dumps(record, indent=2, default=str) + "\n"
    return atomic_write(out_dir / SUMMARY_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def run_quickstart(out_dir: Path, overrides: list[str], only: list[str] | tuple[str, ...] = ()
                   ) -> list[tuple[QuickstartPart, dict]]:
    """Run the parts' tiny recipes into `out_dir/<recipe stem>`; returns (part, summary) pairs.

    A part's folder from an earlier quickstart (only files a run writes) is replaced; a folder
    holding anything else is refused before any part trains. `<out_dir>/quickstart_summary.json`
    is rewritten after every part (`complete` tells whether all parts ran)."""
    from rwkv_mm.cpu import tune_malloc
    from rwkv_mm.recipe import load_recipe
    from rwkv_mm.training.run_dir import run_recipe

    parts = select_parts(only)
    _check(parts, out_dir, overrides)
    tune_malloc()
    record: dict[str, Any] = {"format": 1, "out": str(out_dir), "only": list(only),
                              "overrides": list(overrides), "machine": machine_info(), "complete": False,
                              "parts": []}
    results = []
    for part in parts:
        own = [o.replace("{out}", str(out_dir)) for o in part.overrides]
        recipe = load_recipe(part.recipe, [*own, *_overrides_for(part, overrides)])
        run_dir = out_dir / part.folder
        print(f"\n=== {part.title}: recipe {recipe.source} → {run_dir}")
        start = time.perf_counter()
        summary = run_recipe(recipe, run_dir, existing="replace_own")
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        results.append((part, summary))
        record["parts"].append({"title": part.title, "recipe": part.recipe, "run_dir": str(run_dir),
                                "wall_s": summary["wall_s"],
                                "metrics": {key: summary.get(key) for key in part.keys},
                                "load_average_after": _load_average()})
        record["total_wall_s"] = round(sum(p["wall_s"] for p in record["parts"]), 1)
        record["complete"] = len(results) == len(parts)
        write_summary(out_dir, record)
    return results


def _cmd_quickstart(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    results = run_quickstart(out_dir, args.overrides, [n for item in args.only for n in item.split(",") if n])
    print("\n=== quickstart summary")
    for part, summary in results:
        print(f"{part.title}  ({summary['wall_s']} s)")
        for key in part.keys:
            value = summary.get(key)
            text = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(f"  {key:12s} {text}")
    print(f"written to {out_dir / SUMMARY_NAME}")
    return 0


def add_quickstart_parser(sub) -> None:
    """Register `rwkv-mm quickstart`."""
    q = sub.add_parser("quickstart",
                       help="train tiny models of every modality on bundled data (~10 min on 2 CPUs)")
    q.add_argument("--out", default="runs/quickstart",
                   help="where runs, tunes, plots and quickstart_summary.json go (default: runs/quickstart)")
    q.add_argument("--only", action="append", default=[], metavar="MODALITY",
                   help="run only this modality's parts (repeatable or comma-separated, e.g. music,audio)")
    q.add_argument("overrides", nargs="*",
                   help="key=value overrides for every part, or RECIPE:key=value for one part "
                        "(e.g. music/abc_tiny:generate.n_tunes=5)")
    q.set_defaults(func=_cmd_quickstart)
