"""`rwkv-mm eval gqa|pope`: answer benchmark questions, resumably, and score them.

Answers are appended to a JSON-lines file in LLaVA's answer format (`question_id`, `prompt`,
`text`, `answer_id`, `model_id`, `metadata`) after every batch (flushed and fsynced), so a
killed run loses at most the batch in flight and a rerun skips the ids already answered.
Questions are grouped by image so that the image-state cache serves every question about an
image from one prefill.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from .answer import Question, VisualAnswerer
from .eval_files import read_gqa_questions, read_official_gqa_answers, read_pope_questions
from .metrics import gqa_accuracy, normalize_gqa_answer, pope_metrics

POPE_SPLITS = ("random", "popular", "adversarial")


def read_answers(path: Path) -> dict[str, str]:
    """question_id -> answer text of an answers file (a torn last line is ignored)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash; its question is answered again
            out[str(row["question_id"])] = row["text"]
    return out


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline, so appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def answer_questions(answerer: VisualAnswerer, questions: list[Question], out_path: Path,
                     batch_size: int = 8, model_id: str = "rwkv_mm", desc: str = "answering") -> dict[str, str]:
    """Answer the questions not yet in `out_path`, appending each batch; returns all answers."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(out_path)
    done = read_answers(out_path)
    todo = [q for q in questions if q.qid not in done]
    todo.sort(key=lambda q: str(q.image))  # all questions about one image together (cache hits)
    if done and todo:
        print(f"{out_path}: {len(done)} answers already there, {len(todo)} to go", file=sys.stderr)
    with open(out_path, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc=desc, unit="q") as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            for q, text in zip(batch, answerer.answer(batch)):
                f.write(json.dumps({"question_id": q.qid, "prompt": q.text, "text": text,
                                    "answer_id": f"{model_id}-{q.qid}", "model_id": model_id,
                                    "metadata": {}}) + "\n")
                done[q.qid] = text
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    return done


def score_gqa(questions: list[Question], answers: dict[str, str], truth: dict[str, str]) -> dict:
    """Accuracy over the questions that have an official answer."""
    ids = [q.qid for q in questions if q.qid in truth and q.qid in answers]
    missing = [q.qid for q in questions if q.qid not in truth]
    if missing:
        raise ValueError(f"{len(missing)} question ids have no official answer, e.g. {missing[:3]}")
    return {"accuracy": gqa_accuracy([answers[i] for i in ids], [truth[i] for i in ids]), "n": len(ids)}


def write_gqa_predictions(answers: dict[str, str], path: Path) -> None:
    """The official GQA evaluator's input: [{"questionId", "prediction"}] (normalised)."""
    rows = [{"questionId": qid, "prediction": normalize_gqa_answer(text)} for qid, text in answers.items()]
    path.write_text(json.dumps(rows))


def pope_files(spec: list[str]) -> dict[str, Path]:
    """split name -> file, from a folder holding coco_pope_<split>.json or explicit files."""
    out: dict[str, Path] = {}
    for item in spec:
        p = Path(item)
        if p.is_dir():
            for split in POPE_SPLITS:
                f = p / f"coco_pope_{split}.json"
                if f.is_file():
                    out[split] = f
        elif p.is_file():
            out[p.stem.removeprefix("coco_pope_")] = p
        else:
            raise FileNotFoundError(f"POPE questions: {p} is neither a file nor a folder")
    if not out:
        raise FileNotFoundError(f"no coco_pope_{{random,popular,adversarial}}.json found in {spec}")
    return out


def plot_pope(results: dict[str, dict], path: Path) -> None:
    """Grouped bars: accuracy, precision, recall, F1, yes-ratio per split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    splits = list(results)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(splits)
    for j, split in enumerate(splits):
        xs = [i + (j - (len(splits) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, [results[split][k] for k in keys], width, label=split)
    ax.set_xticks(range(len(keys)), ["accuracy", "precision", "recall", "F1", "yes-ratio"])
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_title("POPE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _make_answerer(args: argparse.Namespace) -> tuple[VisualAnswerer, str]:
    from rwkv_mm.backbone import load_tokenizer
    from rwkv_mm.cpu import tune_malloc

    from .checkpoint import load_visual_rwkv
    from .preprocess import ImageProcessor

    tune_malloc()
    model, meta = load_visual_rwkv(args.checkpoint)
    processor = ImageProcessor(model.vit.image_size, meta["vision"].pad_to_square)
    answerer = VisualAnswerer(model, load_tokenizer("world"), processor, meta["template"],
                              meta["image_position"], args.max_new_tokens, cache_images=not args.no_cache)
    return answerer, Path(args.checkpoint).name


def _limit(xs: list, n: int) -> list:
    return xs[:n] if n > 0 else xs


def _cmd_gqa(args: argparse.Namespace) -> int:
    questions = _limit(read_gqa_questions(args.questions, args.images), args.limit)
    answerer, model_id = _make_answerer(args)
    out = Path(args.answers)
    answers = answer_questions(answerer, questions, out, args.batch_size, model_id, "GQA")
    write_gqa_predictions(answers, out.with_name(out.stem + "_predictions.json"))
    official = args.official or (args.questions if Path(args.questions).suffix == ".json" else None)
    if official:
        result = score_gqa(questions, answers, read_official_gqa_answers(official))
        print(f"GQA accuracy: {100 * result['accuracy']:.2f}  ({result['n']} questions)")
        out.with_name(out.stem + "_score.json").write_text(json.dumps(result, indent=2))
    else:
        print(f"answers in {out}; pass --official testdev_balanced_questions.json to score them")
    return 0


def _cmd_pope(args: argparse.Namespace) -> int:
    files = pope_files(args.questions)
    answerer, model_id = _make_answerer(args)
    out_dir = Path(args.answers)
    results = {}
    for split, path in files.items():
        questions, labels = read_pope_questions(path, args.images)
        questions, labels = _limit(questions, args.limit), _limit(labels, args.limit)
        answers = answer_questions(answerer, questions, out_dir / f"{split}.jsonl", args.batch_size,
                                   model_id, f"POPE {split}")
        results[split] = pope_metrics([answers[q.qid] for q in questions], labels)
    print(format_pope_table(results))
    summary = {"splits": results, "mean_f1": sum(r["f1"] for r in results.values()) / len(results),
               "cache": answerer.stats}
    (out_dir / "pope_summary.json").write_text(json.dumps(summary, indent=2))
    plot_pope(results, out_dir / "pope.png")
    print(f"summary: {out_dir / 'pope_summary.json'}, chart: {out_dir / 'pope.png'}")
    return 0


def format_pope_table(results: dict[str, dict]) -> str:
    """A markdown table of the per-split metrics and the mean F1 (the paper's POPE number)."""
    lines = ["| split | accuracy | precision | recall | F1 | yes-ratio | n |", "|---|---|---|---|---|---|---|"]
    for split, r in results.items():
        lines.append(f"| {split} | {100 * r['accuracy']:.2f} | {100 * r['precision']:.2f} | "
                     f"{100 * r['recall']:.2f} | {100 * r['f1']:.2f} | {100 * r['yes_ratio']:.2f} | {r['n']} |")
    mean_f1 = sum(r["f1"] for r in results.values()) / len(results)
    lines.append(f"| **mean F1** | | | | **{100 * mean_f1:.2f}** | | |")
    return "\n".join(lines)


def add_eval_parser(sub) -> None:
    """Register `rwkv-mm eval gqa` and `rwkv-mm eval pope`."""
    e = sub.add_parser("eval", help="evaluate a VisualRWKV model on GQA or POPE (resumable, image-state cache)")
    bench = e.add_subparsers(dest="benchmark", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True, help="VisualRWKV model folder or released .pth")
        p.add_argument("--images", required=True, help="image folder (GQA images / COCO val2014)")
        p.add_argument("--batch-size", type=int, default=8, help="questions decoded together")
        p.add_argument("--max-new-tokens", type=int, default=16)
        p.add_argument("--no-cache", action="store_true", help="re-encode the image for every question")
        p.add_argument("--limit", type=int, default=0, help="only the first N questions (per split)")

    g = bench.add_parser("gqa", help="GQA testdev-balanced: answers JSONL + exact-match accuracy")
    common(g)
    g.add_argument("--questions", required=True,
                   help="llava_gqa_testdev_balanced_questions.jsonl or the official testdev_balanced_questions.json")
    g.add_argument("--answers", required=True, help="answers JSONL (appended; reruns resume)")
    g.add_argument("--official", help="official testdev_balanced_questions.json (answers) for scoring")
    g.set_defaults(func=_cmd_gqa)

    p = bench.add_parser("pope", help="POPE random/popular/adversarial: acc, P, R, F1, yes-ratio, chart")
    common(p)
    p.add_argument("--questions", required=True, nargs="+",
                   help="a folder with coco_pope_{random,popular,adversarial}.json, or the files")
    p.add_argument("--answers", required=True, help="output folder (<split>.jsonl, summary, chart)")
    p.set_defaults(func=_cmd_pope)

