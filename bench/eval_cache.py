"""POPE-format questions per second with and without the image-state cache (same model, same answers).

The peers (LLaVA's and VisualRWKV's eval scripts) encode the image and prefill the whole prompt
for every question; with an image-first prompt an RNN can prefill `User: <image>` once per image
and reuse the state for all of that image's questions (POPE: 6 per image per split, 18 over the
three splits). Model: a random VisualRWKV with VisualRWKV-5's token count (ViT at 336 px, patch
14, CLS kept: 577 image tokens) and an Eagle LM; both sizes are flags. Target: >= 4x on an idle machine.

The table carries the machine's load average (1/5/15 min, before and after) and each mode's CPU
time beside its wall time: other jobs on the machine shift the wall-time ratio, so a result is
only comparable with others taken at the same load.

    .venv/bin/python bench/eval_cache.py [--images 8] [--n-layer 6] [--n-embd 512]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from rwkv_mm.backbone import RWKV, RWKVConfig, load_tokenizer
from rwkv_mm.cpu import tune_malloc
from rwkv_mm.vision.answer import VisualAnswerer
from rwkv_mm.vision.eval_files import read_pope_questions
from rwkv_mm.vision.model import VisualRWKV
from rwkv_mm.vision.preprocess import ImageProcessor
from rwkv_mm.vision.projector import build_projector
from rwkv_mm.vision.synth import build_synthetic_visual
from rwkv_mm.vision.tower import CustomViTConfig, VisionConfig, build_vision_tower


def build_model(args: argparse.Namespace) -> VisualRWKV:
    torch.manual_seed(0)
    vision = VisionConfig(model_name="custom", pretrained="",
                          custom=CustomViTConfig(image_size=336, patch_size=14, width=args.vit_width,
                                                 layers=args.vit_layers, head_width=64))
    tower = build_vision_tower(vision)
    rwkv = RWKV(RWKVConfig(version="5", n_layer=args.n_layer, n_embd=args.n_embd, vocab_size=65536))
    with torch.no_grad():  # App. I zeroes output projections; random weights make every layer work
        for name, p in rwkv.named_parameters():
            if p.dim() == 2 and "emb" not in name:
                p.normal_(0, p.shape[1] ** -0.5)
    return VisualRWKV(rwkv, tower, build_projector("linear", tower.hidden_size, args.n_embd)).eval()


def run(answerer: VisualAnswerer, questions, batch_size: int) -> tuple[list[str], float, float]:
    """(answers, wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    answers = []
    for i in range(0, len(questions), batch_size):
        answers += answerer.answer(questions[i:i + batch_size])
    return answers, time.perf_counter() - start, time.process_time() - cpu


def load_average() -> str:
    """The machine's load average (1, 5, 15 min) and its CPU count, e.g. '0.12 0.30 0.25 on 2 CPUs'."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8, help="images (6 POPE questions each)")
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=512)
    ap.add_argument("--vit-width", type=int, default=256)
    ap.add_argument("--vit-layers", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=6)
    args = ap.parse_args()
    tune_malloc()
    with tempfile.TemporaryDirectory() as tmp:
        data = build_synthetic_visual(Path(tmp) / "synth", n_train=1, n_eval=args.images)
        questions, _ = read_pope_questions(data / "eval" / "pope" / "coco_pope_random.json", data / "images")
        model = build_model(args)
        tok = load_tokenizer("world")
        proc = ImageProcessor(336)
        rows = []
        results = {}
        load_before = load_average()
        for name, cache in (("no cache (peers' way)", False), ("image-state cache", True)):
            answerer = VisualAnswerer(model, tok, proc, max_new_tokens=args.max_new_tokens, cache_images=cache)
            answers, seconds, cpu = run(answerer, questions, args.batch_size)
            results[name] = answers
            rows.append((name, len(questions), seconds, cpu, len(questions) / seconds))
        load_after = load_average()
    same = results["no cache (peers' way)"] == results["image-state cache"]
    print(f"model: Eagle L{args.n_layer} D{args.n_embd}, ViT {args.vit_layers}x{args.vit_width} at 336 px "
          f"({model.num_image_tokens} image tokens); {args.images} images x 6 questions; "
          f"batch {args.batch_size}; {torch.get_num_threads()} threads")
    print(f"load average (1/5/15 min): {load_before} before, {load_after} after")
    print("| mode | questions | seconds | CPU seconds | questions/s |\n|---|---|---|---|---|")
    for name, n, s, cpu, qps in rows:
        print(f"| {name} | {n} | {s:.1f} | {cpu:.1f} | {qps:.2f} |")
    print(f"speed-up: {rows[1][4] / rows[0][4]:.2f}x wall, {rows[0][3] / rows[1][3]:.2f}x CPU time "
          f"(target >= 4x on an idle machine); identical answers: {same}")


if __name__ == "__main__":
    main()
