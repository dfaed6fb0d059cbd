"""`rwkv-mm audio …`: normalisation statistics, checkpoint averaging, tagging files, the synthetic set.

    rwkv-mm audio stats audio/audioset_t [key=value ...] [--max-clips N] [--out stats.json]
    rwkv-mm audio stats path/to/folder_of_clips --out stats.json
    rwkv-mm audio average --run-dir runs/audio/audioset_t --last 5 [--out model_avg.pt]
    rwkv-mm audio average a.pt b.pt c.pt --out avg.pt
    rwkv-mm audio tag clip.wav [more.flac ...] --checkpoint runs/x/model.pt [--top-k 5]
    rwkv-mm audio synth --out runs/data/audio_synth [--n-train 1000 --n-eval 250 --seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rwkv_mm.cli_types import non_negative_int, positive_int, torch_device


def _cmd_stats(args: argparse.Namespace) -> int:
    import torch

    from rwkv_mm.errors import UserError

    from .fbank import FbankConfig
    from .io import AUDIO_EXTENSIONS, load_audio
    from .stats import StatsAccumulator

    source = Path(args.source)
    if source.is_dir():
        cfg = FbankConfig(sample_rate=args.sample_rate, num_mel_bins=args.num_mel_bins)
        acc = StatsAccumulator(cfg, args.device)
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if args.max_clips > 0:
            files = files[:args.max_clips]
        skipped = 0
        for path in files:
            try:
                wave = load_audio(path, cfg.sample_rate, min_samples=cfg.window_size)
                acc.add(wave[None], names=[str(path)])
            except UserError as err:  # unreadable, NaN/Inf samples, shorter than a window, overflow
                print(f"skipped: {err}", file=sys.stderr)
                skipped += 1
        what = f"{source} ({len(files) - skipped} files, {skipped} skipped)"
    else:
        from rwkv_mm.audio.config import load_splits
        from rwkv_mm.audio.datasets import collate_clips
        from rwkv_mm.recipe import load_recipe

        recipe = load_recipe(args.source, args.overrides)
        cfg_run = recipe.config
        if not hasattr(cfg_run, "features") or not hasattr(cfg_run, "data"):
            raise UserError(f"runner {recipe.runner!r} has no audio data/features sections", where=str(recipe.source),
                            fix="pass an audio recipe (see `rwkv-mm ls`) or a folder of clips")
        splits = load_splits(cfg_run.data, cfg_run.features)
        dataset = splits.train if args.split == "train" else splits.eval
        acc = StatsAccumulator(cfg_run.features.fbank(), args.device)
        n = len(dataset) if args.max_clips <= 0 else min(args.max_clips, len(dataset))
        batch = []
        for i in range(n):
            sample = dataset.load(i)
            if sample is not None:
                batch.append(sample)
            if len(batch) == 32 or (i == n - 1 and batch):
                b = collate_clips(batch)
                acc.add(b["wave"], b["lengths"], [str(dataset.records[int(j)].path) for j in b["index"]])
                batch = []
        print(dataset.problems.format(f"{args.split} clips left out"))
        what = f"{recipe.source} {args.split} split ({n} clips listed)"
    with torch.no_grad():
        stats = acc.result(what)
    path = stats.save(args.out)
    print(f"mean {stats.mean:.7f}  std {stats.std:.7f}  over {stats.n_frames:,} frames of {stats.n_clips:,} clips")
    print(f"wrote {path}; use it with features.stats={path}")
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from rwkv_mm.errors import UserError

    from .checkpoint import average_checkpoints, step_checkpoints

    paths = [Path(p) for p in args.checkpoints]
    if args.run_dir:
        found = step_checkpoints(args.run_dir)
        if not found:
            raise FileNotFoundError(f"{args.run_dir}/checkpoints: no step_*.pt snapshots "
                                    "(train with eval.snapshot_every > 0)")
        paths += found[-args.last:] if args.last > 0 else found
    elif args.last > 0:
        paths = paths[-args.last:]
    if len(paths) < 2:
        raise UserError(f"need at least two checkpoints to average, got {len(paths)}",
                        fix="name two or more checkpoints, or a --run-dir with snapshots")
    out = Path(args.out) if args.out else Path(args.run_dir or ".") / "model_avg.pt"
    average_checkpoints(paths, out)
    print(f"averaged {len(paths)} checkpoints:")
    for p in paths:
        print(f"  {p}")
    print(f"wrote {out}")
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    import torch

    from rwkv_mm.errors import UserError

    from .checkpoint import load_tagger
    from .tagger import tag_file

    model, features, ckpt = load_tagger(args.checkpoint)
    model.to(args.device)
    failed = 0
    for file in args.files:  # a bad file is reported and skipped; the others are still tagged
        try:
            with torch.no_grad():
                labels = tag_file(file, model, features, ckpt["names"], ckpt["mids"], args.top_k)
        except UserError as err:  # AudioLoadError: missing, unreadable, NaN/Inf, too short
            print(f"rwkv-mm: error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(file)
        for name, mid, p in labels:
            print(f"  {p:6.3f}  {name}  ({mid})")
    if failed:
        print(f"rwkv-mm: {failed} of {len(args.files)} file(s) not tagged", file=sys.stderr)
    return 2 if failed else 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import SynthConfig, build_synth

    cfg = SynthConfig(out=args.out, n_train=args.n_train, n_eval=args.n_eval, clip_seconds=args.clip_seconds,
                      seed=args.seed, bad_train_clips=not args.no_bad_clips)
    out = build_synth(cfg, force=args.force)
    print(f"synthetic sound-event set in {out} ({cfg.n_train} train + {cfg.n_eval} eval clips)")
    return 0


def add_commands(sub) -> None:
    """Register `stats`, `average`, `tag` and `synth` on `sub` (the `audio` group's subparsers)."""
    s = sub.add_parser("stats", help="fbank mean/std of a recipe's data (or a folder of clips) for features.stats")
    s.add_argument("source", help="an audio recipe (name or path) or a folder of audio files")
    s.add_argument("overrides", nargs="*", help="recipe overrides, e.g. data.max_train_clips=5000")
    s.add_argument("--split", choices=("train", "eval"), default="train")
    s.add_argument("--max-clips", type=non_negative_int, default=0, help="use the first N clips (0 = all)")
    s.add_argument("--out", default="fbank_stats.json")
    s.add_argument("--sample-rate", type=positive_int, default=16000, help="folder source only")
    s.add_argument("--num-mel-bins", type=positive_int, default=128, help="folder source only")
    s.add_argument("--device", type=torch_device, default="cpu")
    s.set_defaults(func=_cmd_stats)

    v = sub.add_parser("average", help="average the weights of the last K tagger checkpoints")
    v.add_argument("checkpoints", nargs="*", help="tagger checkpoints (model.pt / step_*.pt), oldest first")
    v.add_argument("--run-dir", default=None, help="take the step_*.pt snapshots of this run")
    v.add_argument("--last", type=non_negative_int, default=0, help="average only the last K (0 = all)")
    v.add_argument("--out", default=None, help="default: <run-dir>/model_avg.pt")
    v.set_defaults(func=_cmd_average)

    t = sub.add_parser("tag", help="top-k labels of audio files with a trained tagger")
    t.add_argument("files", nargs="+")
    t.add_argument("--checkpoint", required=True, help="a tagger checkpoint (the runner's model.pt)")
    t.add_argument("--top-k", type=positive_int, default=5, help="labels shown per file (>= 1)")
    t.add_argument("--device", type=torch_device, default="cpu")
    t.set_defaults(func=_cmd_tag)

    g = sub.add_parser("synth", help="generate the synthetic multi-label sound-event set")
    g.add_argument("--out", default="runs/data/audio_synth")
    g.add_argument("--n-train", type=int, default=1000)
    g.add_argument("--n-eval", type=int, default=250)
    g.add_argument("--clip-seconds", type=float, default=2.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-bad-clips", action="store_true", help="leave out the deliberately damaged entries")
    g.add_argument("--force", action="store_true", help="regenerate even when an identical set exists")
    g.set_defaults(func=_cmd_synth)
