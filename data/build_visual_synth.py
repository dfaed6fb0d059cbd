"""Write the synthetic VisualRWKV dataset (shapes images, LLaVA JSON for both stages, GQA and
POPE evaluation files in their official formats). The tiny recipes call the same function
themselves when `data.synthetic: true`.

    python data/build_visual_synth.py [--root runs/data/visual_synth] [--n-train 1000] [--n-eval 40]

The set is written under the working folder (like every generated set: `runs/data/...`).
"""

import argparse
import sys

from rwkv_mm.errors import UserError
from rwkv_mm.vision.synth import build_synthetic_visual

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/data/visual_synth")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-eval", type=int, default=40)
    ap.add_argument("--max-objects", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    try:
        root = build_synthetic_visual(a.root, a.n_train, a.n_eval, a.seed, a.max_objects)
    except UserError as err:
        print(f"build_visual_synth: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {root}")
