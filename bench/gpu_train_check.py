"""A few training steps of every modality on the GPU (bf16 autocast) against the CPU (fp32).

Issue 18's training check: `music/abc_tiny`, `visual/stage2_tiny` and `audio/synth_tiny` train
`--steps` optimizer steps (default 6) from the same seed twice: the reference side on the CPU in
fp32, the tested side on `--device` (default cuda) with `train.precision=bf16`. Checked per
modality, and written as a markdown table to `--out` (default `$OUT/train_check.md`, `$OUT`
defaulting to ./gpu_out):

  falls    the mean loss of the later half of the steps is below the first step's, on both
           sides (each step draws another batch; audio uses 4x `--batch` clips);
  step 1   the tested side's first loss is within `--tol-first` (relative, default 5e-2) of the
           reference's: same weights, same batch, so only bf16 rounding may differ;
  drift    every later step within `--tol-all` (relative, default 0.15): bf16 updates move the
           weights a little apart, step by step.

Exits 1 when a check fails or a side could not train (its error is in the table), 0 otherwise.

How: the runners' Python API (`rwkv_mm.runners.*` stage classes: `setup()` builds data, model and
`Trainer`, then `Trainer.fit(on_step=...)` records every step's loss; the export — tunes,
GQA/POPE, mAP — is skipped). Each side is a child process of this script (`--role side`); the
reference side runs with CUDA hidden (`CUDA_VISIBLE_DEVICES=""`), which is how the trainer is
made to use the CPU. This process first generates the shared inputs in a work folder (default: a
temp folder, removed at the end unless `--keep`): the synthetic visual set, a small synthetic
audio set and stage 1's VisualRWKV model (1 step of `visual/stage1_tiny` on the CPU), which both
stage-2 runs start from. On CUDA both sides run at once (`--sequential` to not).

    python bench/gpu_train_check.py                      # GPU session (bench/gpu_session.sh)
    python bench/gpu_train_check.py --device cpu --steps 3 --batch 4   # smoke test: CPU bf16 vs CPU fp32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

MODALITIES = ("music", "visual", "audio")
RECIPES = {"music": "music/abc_tiny", "visual": "visual/stage2_tiny", "audio": "audio/synth_tiny"}
AUDIO_BATCH_SCALE = 4  # audio/synth_tiny trains with `--batch` x 4 clips (multi-label BCE is noisy per batch)
STAGES = {"music": "rwkv_mm.runners.lm_music:MusicStage",
          "visual": "rwkv_mm.runners.visual_rwkv:VisualStage",
          "audio": "rwkv_mm.runners.audio_tagging:AudioTaggingStage"}


# ----------------------------------------------------------------------------- recipes
def train_overrides(steps: int, batch: int, precision: str) -> list[str]:
    """The `train:` settings every run shares: short, no eval, no warmup (so 6 steps move the
    loss), per-step loss records, no TensorBoard (may be missing on the device)."""
    return [f"train.max_steps={steps}", f"train.batch_size={batch}", "train.micro_batch_size=0",
            "train.warmup_steps=0", "train.eval_every=0", "train.save_every=0", "train.log_every=1",
            "train.loggers=[jsonl]", "train.num_workers=0", f"train.precision={precision}"]


def visual_data(work: Path, stage: int) -> list[str]:
    """Stage `stage`'s data paths inside `work` (the recipes name runs/data/... in the cwd)."""
    root = work / "visual_synth"
    data = "stage1_captions.json" if stage == 1 else "stage2_qa.json"
    return [f"data.data_path={root / data}", f"data.image_root={root}", f"data.synthetic_root={root}"]


def modality_overrides(name: str, work: Path) -> list[str]:
    """What each tiny recipe needs besides `train_overrides`: paths in `work`, small data."""
    if name == "music":
        return ["data.ctx_len=128", "data.max_validation_tunes=4"]
    if name == "visual":
        return [f"init_from={work / 'stage1' / 'model'}", *visual_data(work, 2),
                *[f"eval.{k}=" for k in ("gqa_questions", "gqa_answers", "gqa_images", "pope_questions",
                                          "pope_images")]]
    root = work / "audio_synth"
    return [f"data.class_labels={root / 'class_labels_indices.csv'}", f"data.train={root / 'train_segments.csv'}",
            f"data.eval={root / 'eval_segments.csv'}", f"data.clip_dirs=[{root / 'clips'}]",
            f"data.synthetic.out={root}", "data.synthetic.n_train=64", "data.synthetic.n_eval=16",
            "eval.every=0", "eval.snapshot_every=0", "eval.average_last=0"]


def prepare(work: Path) -> None:
    """The inputs both sides share: the visual set and stage 1's model (1 CPU step), the audio set."""
    from rwkv_mm.audio.synth import build_synth
    from rwkv_mm.recipe import load_recipe
    from rwkv_mm.training.run_dir import run_recipe

    stage1 = load_recipe("visual/stage1_tiny", [*train_overrides(1, 4, "fp32"), *visual_data(work, 1)])
    run_recipe(stage1, work / "stage1")
    audio = load_recipe(RECIPES["audio"], modality_overrides("audio", work))
    build_synth(audio.config.data.synthetic)


# ----------------------------------------------------------------------------- one side
def train_one(name: str, work: Path, run_dir: Path, steps: int, batch: int, precision: str) -> dict:
    """Train modality `name` for `steps` steps; returns {"losses", "seconds", "device"}."""
    import importlib

    from rwkv_mm.recipe import load_recipe

    batch *= AUDIO_BATCH_SCALE if name == "audio" else 1  # one clip is 108 tokens: cheap, and noisy
    recipe = load_recipe(RECIPES[name], [*train_overrides(steps, batch, precision),
                                         *modality_overrides(name, work)])
    module, cls = STAGES[name].split(":")
    stage = getattr(importlib.import_module(module), cls)(recipe.config, run_dir)
    losses: list[float | None] = []

    def on_step(trainer, record: dict) -> None:
        hook = getattr(stage, "on_step", None)
        if hook is not None:
            hook(trainer, record)
        losses.append(None if "skipped" in record else float(record["loss"]))

    start = time.perf_counter()
    trainer = stage.setup()
    trainer.fit(on_step=on_step)
    return {"losses": losses, "seconds": round(time.perf_counter() - start, 1), "device": str(trainer.device)}


def run_side(args: argparse.Namespace) -> int:
    """`--role side`: train every requested modality, write {modality: result or error} as JSON."""
    import torch

    out: dict = {"torch": torch.__version__, "cuda": torch.version.cuda,
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name in args.modalities:
        run_dir = Path(args.work) / f"{args.label}_{name}"
        try:
            out[name] = train_one(name, Path(args.work), run_dir, args.steps, args.batch, args.precision)
        except Exception as err:  # recorded, and the next modality still runs
            traceback.print_exc()
            out[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}
        print(f"[{args.label}] {name}: {out[name]}", flush=True)
    out["modules"] = third_party_modules()
    Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def third_party_modules() -> list[str]:
    """Top-level modules imported from site-packages (what the device image must hold)."""
    names = set()
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if "." not in name and ("site-packages" in origin or "dist-packages" in origin):
            names.add(name)
    return sorted(names)


# ----------------------------------------------------------------------------- checks
def rel(a: float, b: float) -> float:
    """|a - b| relative to |b|."""
    return abs(a - b) / max(abs(b), 1e-12)


def late_mean(losses: list[float]) -> float:
    """The mean loss of the later half of the steps (each step sees another batch: one is noisy)."""
    return sum(losses[len(losses) // 2:]) / len(losses[len(losses) // 2:])


def compare(ref: dict, test: dict, tol_first: float, tol_all: float) -> tuple[list[str], bool]:
    """Markdown rows (one per modality) and whether every check passed."""
    rows, ok = [], True
    for name in [m for m in MODALITIES if m in ref or m in test]:
        r, t = ref.get(name, {"error": "not run"}), test.get(name, {"error": "not run"})
        if "error" in r or "error" in t:
            ok = False
            rows.append(f"| {name} | {RECIPES[name]} | - | - | - | - | - | - | FAIL: ref {r.get('error', 'ok')}; "
                        f"test {t.get('error', 'ok')} |")
            continue
        rl, tl = r["losses"], t["losses"]
        if None in rl or None in tl or len(rl) != len(tl) or not rl:
            ok = False
            rows.append(f"| {name} | {RECIPES[name]} | {len(tl)} | {rl} | {tl} | - | - | - | FAIL: skipped steps |")
            continue
        falls = late_mean(rl) < rl[0] and late_mean(tl) < tl[0]
        first = rel(tl[0], rl[0])
        drift = max(rel(a, b) for a, b in zip(tl, rl))
        problems = [p for p, bad in (("loss does not fall", not falls),
                                     (f"step 1 off by {first:.1e} > {tol_first:g}", first > tol_first),
                                     (f"drift {drift:.1e} > {tol_all:g}", drift > tol_all)) if bad]
        ok &= not problems
        rows.append(f"| {name} | {RECIPES[name]} | {len(tl)} | {rl[0]:.4f} → {rl[-1]:.4f} | "
                    f"{tl[0]:.4f} → {tl[-1]:.4f} | {first:.1e} | {drift:.1e} | {r['seconds']} / {t['seconds']} | "
                    f"{'; '.join(problems) or 'ok'} |")
    return rows, ok


def report(args: argparse.Namespace, ref: dict, test: dict, prep_s: float) -> tuple[str, bool]:
    """The markdown report and the verdict."""
    rows, ok = compare(ref, test, args.tol_first, args.tol_all)
    side = f"{args.device} bf16"
    lines = [f"# Training check: {side} vs CPU fp32, {args.steps} steps, batch {args.batch}", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, torch {test.get('torch')} (CUDA {test.get('cuda')}), "
             f"GPU {test.get('gpu')}; inputs prepared in {prep_s:.0f} s. "
             f"Command: `python bench/gpu_train_check.py {' '.join(sys.argv[1:])}`.",
             f"Checks: the loss falls (mean of the later half < first, both sides); step 1 within {args.tol_first:g} relative; "
             f"every step within {args.tol_all:g}.", "",
             f"| modality | recipe | steps | CPU fp32 loss first → last | {side} loss first → last | "
             "rel diff step 1 | max rel diff | seconds ref / test | result |",
             "|---|---|---|---|---|---|---|---|---|", *rows, "",
             "Per-step losses (ref, test):"]
    for name in args.modalities:
        lines.append(f"- {name}: {ref.get(name, {}).get('losses')} / {test.get(name, {}).get('losses')}")
    lines.append(f"- third-party modules imported by the tested side: {', '.join(test.get('modules', [])) or '?'}")
    lines.append(f"\n**{'PASS' if ok else 'FAIL'}**")
    return "\n".join(lines) + "\n", ok


# ----------------------------------------------------------------------------- main
def side_command(args: argparse.Namespace, work: Path, label: str, precision: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", "side", "--work", str(work),
            "--label", label, "--precision", precision, "--json", str(work / f"{label}.json"),
            "--steps", str(args.steps), "--batch", str(args.batch), "--modalities", *args.modalities]


def run_main(args: argparse.Namespace) -> int:
    original = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # this process (the preparation) and the reference: CPU
    out = Path(args.out or Path(os.environ.get("OUT", "gpu_out")) / "train_check.md")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_train_check_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}", flush=True)
    start = time.perf_counter()
    if "visual" in args.modalities or "audio" in args.modalities:
        prepare(work)
    prep_s = time.perf_counter() - start
    cpu_env = dict(os.environ)
    test_env = dict(os.environ)
    if args.device != "cpu":
        test_env.pop("CUDA_VISIBLE_DEVICES")
        if original is not None:
            test_env["CUDA_VISIBLE_DEVICES"] = original
    jobs = [(side_command(args, work, "ref", "fp32"), cpu_env),
            (side_command(args, work, "test", "bf16"), test_env)]
    if args.sequential or args.device == "cpu":
        codes = [subprocess.call(cmd, env=env) for cmd, env in jobs]
    else:
        procs = [subprocess.Popen(cmd, env=env) for cmd, env in jobs]
        codes = [p.wait() for p in procs]

    def load(label: str) -> dict:
        path = work / f"{label}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    ref, test = load("ref"), load("test")
    for label, code, side in (("ref", codes[0], ref), ("test", codes[1], test)):
        if code or not side:
            for name in args.modalities:
                side.setdefault(name, {"error": f"the {label} process exited {code}"})
    text, ok = report(args, ref, test, prep_s)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="the tested side: cuda (default) or cpu (smoke test)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8, help="train.batch_size of every run")
    ap.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    ap.add_argument("--tol-first", type=float, default=5e-2, help="relative, step 1")
    ap.add_argument("--tol-all", type=float, default=0.15, help="relative, every step")
    ap.add_argument("--out", default=None, help="markdown report (default $OUT/train_check.md, OUT=gpu_out)")
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the temp work folder")
    ap.add_argument("--sequential", action="store_true", help="run the two sides one after the other")
    ap.add_argument("--role", choices=("main", "side"), default="main", help=argparse.SUPPRESS)
    ap.add_argument("--label", default="test", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    return run_side(args) if args.role == "side" else run_main(args)


if __name__ == "__main__":
    sys.exit(main())
