"""A small synthetic visual dataset in the real formats: coloured shapes at grid positions.

`build_synthetic_visual(root)` writes (deterministically from `seed`):
- `images/*.png`: 64x64 pictures with 1..max_objects shapes (circle, square, triangle) of four
  colours in the four quadrants;
- `stage1_captions.json`: LLaVA JSON, `<image>\\nDescribe the image briefly.` -> a caption;
- `stage2_qa.json`: LLaVA JSON multi-turn QA (colour / shape / position / yes-no questions);
- `eval/llava_gqa_testdev_balanced_questions.jsonl` and `eval/testdev_balanced_questions.json`
  (LLaVA's GQA question file and the official GQA answer file);
- `eval/pope/coco_pope_{random,popular,adversarial}.json` (POPE lines with labels).
Train and eval images are disjoint. `done` (the settings) is written last, and the set is
published through `rwkv_mm.generated`: `root` must be new, empty, or a set this builder made,
and a rebuild removes only the files its marker lists.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from rwkv_mm.errors import UserError
from rwkv_mm.generated import build_generated

from .eval_files import GQA_SUFFIX

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 205, 30)}
SHAPES = ("circle", "square", "triangle")
QUADRANTS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
SIZE = 64


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour: str, quadrant: str, rng: random.Random) -> None:
    qx, qy = QUADRANTS[quadrant]
    half = SIZE // 2
    r = rng.randint(9, 12)
    cx = qx * half + half // 2 + rng.randint(-2, 2)
    cy = qy * half + half // 2 + rng.randint(-2, 2)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def _scene(rng: random.Random, max_objects: int = 1) -> list[tuple[str, str, str]]:
    """1..max_objects (shape, colour, quadrant) objects, in different quadrants, all different."""
    n = rng.randint(1, max_objects)
    quadrants = rng.sample(list(QUADRANTS), n)
    objects: list[tuple[str, str, str]] = []
    while len(objects) < n:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if all((shape, colour) != (s, c) for s, c, _ in objects):
            objects.append((shape, colour, quadrants[len(objects)]))
    return objects


def _caption(objects: list[tuple[str, str, str]]) -> str:
    parts = [f"a {c} {s} in the {q}" for s, c, q in objects]
    return (" and ".join(parts) + ".").capitalize()


def _questions(objects: list[tuple[str, str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """(question, one-word answer) pairs answerable from the picture."""
    qa = []
    for shape, colour, quad in objects:
        qa.append((f"What color is the {shape} in the {quad}?" if
                   sum(s == shape for s, _, _ in objects) > 1 else f"What color is the {shape}?", colour))
        qa.append((f"What shape is in the {quad}?", shape))
        qa.append((f"Where is the {colour} {shape}?", quad))
    present = [(s, c) for s, c, _ in objects]
    absent = [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in present]
    s, c = rng.choice(present)  # balanced yes/no: one present and one absent object
    qa.append((f"Is there a {c} {s} in the image?", "yes"))
    s, c = rng.choice(absent)
    qa.append((f"Is there a {c} {s} in the image?", "no"))
    return qa


def _pope_questions(objects, rng: random.Random, split: str) -> list[tuple[str, str]]:
    """Three present and three absent objects per image (POPE's balanced design); absent ones
    drawn at random, from the most frequent objects, or as same-shape/other-colour look-alikes."""
    present = [(s, c) for s, c, _ in objects]
    all_objects = [(s, c) for s in SHAPES for c in COLOURS]
    absent = [o for o in all_objects if o not in present]
    if split == "random":
        negatives = rng.sample(absent, 3)
    elif split == "popular":  # a fixed popularity order (most frequent first)
        negatives = absent[:3]
    else:  # adversarial: objects that share a shape with a present one
        near = [o for o in absent if any(o[0] == p[0] for p in present)]
        negatives = (near + [o for o in absent if o not in near])[:3]
    positives = [present[i % len(present)] for i in range(3)]
    qs = [(f"Is there a {c} {s} in the image?", "yes") for s, c in positives]
    qs += [(f"Is there a {c} {s} in the image?", "no") for s, c in negatives]
    rng.shuffle(qs)
    return qs


VERSION = 2


def build_synthetic_visual(root: str | Path, n_train: int = 1000, n_eval: int = 40, seed: int = 0,
                           max_objects: int = 1) -> Path:
    """Write the dataset under `root` (skipped when `root/done` records the same settings).

    Raises:
        UserError: `root` is a file or a non-empty folder this builder did not make (nothing is
            touched), or a count is out of range.
    """
    root = Path(root)
    for name, value, lo in (("n_train", n_train, 1), ("n_eval", n_eval, 1), ("seed", seed, 0),
                            ("max_objects", max_objects, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise UserError(f"synthetic visual set: {name}={value!r}: expected an int >= {lo}")
    if max_objects > len(QUADRANTS):
        raise UserError(f"synthetic visual set: max_objects={max_objects}: expected at most {len(QUADRANTS)}")
    signature = json.dumps({"version": VERSION, "n_train": n_train, "n_eval": n_eval, "seed": seed,
                            "max_objects": max_objects})
    done = root / "done"
    try:
        if done.is_file() and done.read_text().strip() == signature:
            return root
    except OSError:
        pass
    return build_generated(root, lambda folder: _write_set(folder, signature, n_train, n_eval, seed, max_objects),
                           generator="rwkv_mm.vision.synth", sentinel="done",
                           setting="data.synthetic_root in the recipe (or --root)")


def _write_set(root: Path, signature: str, n_train: int, n_eval: int, seed: int, max_objects: int) -> None:
    """Write the whole set into `root` (a fresh, empty folder); `done` last."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "eval" / "pope").mkdir(parents=True, exist_ok=True)
    scenes = {}
    for i in range(n_train + n_eval):
        name = f"{'train' if i < n_train else 'eval'}_{i:05d}.png"
        objects = _scene(rng, max_objects)
        image = Image.new("RGB", (SIZE, SIZE), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        for shape, colour, quad in objects:
            _draw(draw, shape, colour, quad, rng)
        image.save(root / "images" / name)
        scenes[name] = objects
    train = [n for n in scenes if n.startswith("train")]
    evals = [n for n in scenes if n.startswith("eval")]

    stage1 = [{"id": f"cap{i}", "image": f"images/{n}",
               "conversations": [{"from": "human", "value": "<image>\nDescribe the image briefly."},
                                 {"from": "gpt", "value": _caption(scenes[n])}]} for i, n in enumerate(train)]
    stage2 = []
    for i, n in enumerate(train):
        qa = _questions(scenes[n], rng)
        rng.shuffle(qa)
        turns = []
        for j, (q, a) in enumerate(qa[:4]):
            human = f"{q}\n{GQA_SUFFIX}" if rng.random() < 0.5 else q
            answer = a.capitalize() if human.endswith(GQA_SUFFIX) else f"{a.capitalize()}."
            turns += [{"from": "human", "value": ("<image>\n" if j == 0 else "") + human},
                      {"from": "gpt", "value": answer}]
        stage2.append({"id": f"qa{i}", "image": f"images/{n}", "conversations": turns})
    stage2.append({"id": "text0", "conversations": [  # a text-only sample, as in llava_v1_5_mix665k
        {"from": "human", "value": "What colors do the shapes have?"},
        {"from": "gpt", "value": "Red, green, blue or yellow."}]})
    _write_json(root / "stage1_captions.json", stage1)
    _write_json(root / "stage2_qa.json", stage2)

    gqa_lines, gqa_official = [], {}
    for n in evals:
        for j, (q, a) in enumerate(_questions(scenes[n], rng)):
            qid = f"{Path(n).stem}_{j}"
            gqa_lines.append({"question_id": qid, "image": n, "text": f"{q}\n{GQA_SUFFIX}"})
            gqa_official[qid] = {"imageId": Path(n).stem, "question": q, "answer": a,
                                 "fullAnswer": f"{a.capitalize()}.", "isBalanced": True}
    _write_jsonl(root / "eval" / "llava_gqa_testdev_balanced_questions.jsonl", gqa_lines)
    _write_json(root / "eval" / "testdev_balanced_questions.json", gqa_official)
    qid = 0
    for split in ("random", "popular", "adversarial"):
        lines = []
        for n in evals:
            for q, label in _pope_questions(scenes[n], rng, split):
                qid += 1
                lines.append({"question_id": qid, "image": n, "text": q, "label": label})
        _write_jsonl(root / "eval" / "pope" / f"coco_pope_{split}.json", lines)
    (root / "done").write_text(signature + "\n")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
