"""Generate the synthetic multi-label sound-event set (AudioSet layout) used by the tiny audio recipe.

    .venv/bin/python data/build_audio_synth.py [--out runs/data/audio_synth] [--n-train 1000 --n-eval 250 --seed 0]

Ten event types (tone, rising/falling chirp, noise band, click train, harmonic stack, tremolo,
vibrato, noise bursts, knocks), 1–3 per clip at random times and levels over faint background
noise; deterministic for a seed. Writes class_labels_indices.csv, {train,eval}_segments.csv,
{train,eval}.json (AST manifests) and clips/*.wav under the working folder. The generator is
`rwkv_mm.audio.synth.build_synth` (the recipe calls it when the folder is missing; `rwkv-mm audio
synth` is the same command).
"""

from __future__ import annotations

import argparse
import sys

from rwkv_mm.audio.synth import SynthConfig, build_synth
from rwkv_mm.errors import UserError


def main(argv: list[str] | None = None) -> int:
    """Build the set; a refused folder or a bad setting is one error line and exit status 2."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=SynthConfig.out)
    ap.add_argument("--n-train", type=int, default=SynthConfig.n_train)
    ap.add_argument("--n-eval", type=int, default=SynthConfig.n_eval)
    ap.add_argument("--clip-seconds", type=float, default=SynthConfig.clip_seconds)
    ap.add_argument("--seed", type=int, default=SynthConfig.seed)
    ap.add_argument("--no-bad-clips", action="store_true", help="leave out the deliberately damaged entries")
    ap.add_argument("--force", action="store_true", help="regenerate even when an identical set exists")
    a = ap.parse_args(argv)
    try:
        cfg = SynthConfig(out=a.out, n_train=a.n_train, n_eval=a.n_eval, clip_seconds=a.clip_seconds,
                          seed=a.seed, bad_train_clips=not a.no_bad_clips)
        out = build_synth(cfg, force=a.force)
    except UserError as err:
        print(f"build_audio_synth: error: {err}", file=sys.stderr)
        return 2
    print(f"synthetic sound-event set in {out} ({cfg.n_train} train + {cfg.n_eval} eval clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
