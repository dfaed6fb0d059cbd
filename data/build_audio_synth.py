"""Generate the synthetic multi-label sound-event set (AudioSet layout) used by the tiny audio recipe.

    .venv/bin/python data/build_audio_synth.py --out runs/data/audio_synth [--n-train 1000 --n-eval 250 --seed 0]

Ten event types (tone, rising/falling chirp, noise band, click train, harmonic stack, tremolo,
vibrato, noise bursts, knocks), 1–3 per clip at random times and levels over faint background
noise; deterministic for a seed. Writes class_labels_indices.csv, {train,eval}_segments.csv,
{train,eval}.json (AST manifests) and clips/*.wav. The generator itself is
`rwkv_mm.audio.synth` (the recipe calls it when the folder is missing; `rwkv-mm audio synth`
is the same command).
"""

from __future__ import annotations

import sys

from rwkv_mm.cli import main as rwkv_mm_main


def main(argv: list[str] | None = None) -> int:
    """`rwkv-mm audio synth ARGS` (same flags, same one-line errors and exit codes)."""
    return rwkv_mm_main(["audio", "synth", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
