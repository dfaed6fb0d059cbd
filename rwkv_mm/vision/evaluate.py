"""`rwkv-mm vision eval gqa|pope` (alias `rwkv-mm eval`): answer benchmark questions, resumably,
and score them.

Answers are appended to a JSON-lines file in LLaVA's answer format (`question_id`, `prompt`,
`text`, `answer_id`, `model_id`, `metadata`) after every batch (flushed and fsynced), so a
killed run loses at most the batch in flight and a rerun skips the ids already answered. The
file's first line is a header naming the checkpoint (content hash) and the decoding settings;
a rerun with other ones is refused instead of mixed in (see `answers_file`). Questions are
grouped by image so that the image-state cache serves every question about an image from one
prefill.

`--on-error raise` (default) stops at the first unreadable image with an error naming the
question and the file; `--on-error skip` leaves that image's questions out, lists them (ids,
image, reason) in the summary and says that they are excluded from the denominator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from rwkv_mm.errors import UserError

from .answer import Question, SkippedQuestion, VisualAnswerer, answer_in_batches
from .answers_file import append_answers, open_answers, read_answers
from .eval_files import read_gqa_questions, read_official_gqa_answers, read_pope_questions
from .metrics import gqa_accuracy, normalize_gqa_answer, pope_metrics

__all__ = ["answer_questions", "read_answers", "score_gqa", "answer_settings", "format_pope_table"]

POPE_SPLITS = ("random", "popular", "adversarial")


def answer_settings(answerer: VisualAnswerer, benchmark: str) -> dict:
    """What, besides the checkpoint, decides the answers (recorded in the answers file)."""
    from rwkv_mm.training.peft_tuning import adapters_of

    processor = answerer.processor
    settings = {"benchmark": benchmark, "max_new_tokens": answerer.max_new_tokens,
                "template": vars(answerer.template), "image_position": answerer.image_position,
                "image_size": getattr(processor, "image_size", None),
                "pad_to_square": getattr(processor, "pad_to_square", None)}
    adapters = adapters_of(answerer.model)  # --adapter: the answers depend on it too
    settings["adapter_sha256"] = adapters.source_sha256 if adapters is not None else None
    return settings


def answer_questions(answerer: VisualAnswerer, questions: list[Question], out_path: Path,
                     batch_size: int = 8, model_id: str = "rwkv_mm", desc: str = "answering", *,
                     checkpoint: str | Path, benchmark: str, on_error: str = "raise",
                     skipped: list[SkippedQuestion] | None = None) -> dict[str, str]:
    """Answer the questions not yet in `out_path`, appending each batch; returns all answers.

    `out_path` must be new or hold answers of the same `checkpoint` and settings (its header);
    a question answered there for another prompt is an error. Questions skipped for an
    unreadable image (`on_error="skip"`) are appended to `skipped` and not written."""
    done = open_answers(out_path, answer_settings(answerer, benchmark), checkpoint)
    for q in questions:
        row = done.get(q.qid)
        if row is not None and row.get("prompt") not in (None, q.text):
            raise UserError(f"question {q.qid} was answered there for the prompt {row['prompt']!r}, "
                            f"the questions file now asks {q.text!r}", where=str(out_path),
                            fix="pass another --answers path for this questions file")
    answers = {qid: row["text"] for qid, row in done.items()}
    todo = [q for q in questions if q.qid not in answers]
    todo.sort(key=lambda q: str(q.image))  # all questions about one image together (cache hits)
    if done and todo:
        print(f"{out_path}: {len(done)} answers already there, {len(todo)} to go", file=sys.stderr)
    skipped = skipped if skipped is not None else []
    with open(out_path, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc=desc, unit="q") as bar:
        for pairs in answer_in_batches(answerer, todo, batch_size, on_error, skipped):
            append_answers(f, [{"question_id": q.qid, "prompt": q.text, "text": text,
                                "answer_id": f"{model_id}-{q.qid}", "model_id": model_id, "metadata": {}}
                               for q, text in pairs])
            answers.update((q.qid, text) for q, text in pairs)
            bar.update(len(pairs))
    return answers


def skipped_note(skipped: list[SkippedQuestion], total: int) -> str:
    """One line for the summary: how many of `total` questions were skipped and why it matters."""
    reasons = {s.image: s.reason for s in skipped}  # one reason per unreadable image
    ids = ", ".join(s.qid for s in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
    images = "; ".join(f"{image}: {reason}" for image, reason in list(reasons.items())[:3])
    more = f" and {len(reasons) - 3} more" if len(reasons) > 3 else ""
    return (f"{len(skipped)} of {total} questions skipped, excluded from the denominator ({ids}); "
            f"{len(reasons)} unreadable image(s): {images}{more}")


def score_gqa(questions: list[Question], answers: dict[str, str], truth: dict[str, str],
              skipped: list[SkippedQuestion] = ()) -> dict:
    """Accuracy over the answered questions (every question needs an official answer); the
    skipped ones are listed and excluded from `n`, the denominator."""
    missing = [q.qid for q in questions if q.qid not in truth]
    if missing:
        raise UserError(f"{len(missing)} question ids have no official answer, e.g. {missing[:3]}",
                        fix="pass the official answers of this questions file with --official")
    skipped_ids = {s.qid for s in skipped}
    unanswered = [q.qid for q in questions if q.qid not in answers and q.qid not in skipped_ids]
    assert not unanswered, f"questions neither answered nor skipped: {unanswered[:3]}"
    ids = [q.qid for q in questions if q.qid in answers]
    return {"accuracy": gqa_accuracy([answers[i] for i in ids], [truth[i] for i in ids]), "n": len(ids),
            "n_skipped": len(skipped), "skipped": [s.to_json() for s in skipped]}


def write_gqa_predictions(answers: dict[str, str], path: Path) -> None:
    """The official GQA evaluator's input: [{"questionId", "prediction"}] (normalised), from the
    answers (never the answers file's header)."""
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
            raise UserError("POPE questions: neither a file nor a folder", where=str(p),
                            fix="pass a folder with coco_pope_<split>.json files, or the files")
    if not out:
        raise UserError("no coco_pope_{random,popular,adversarial}.json found", where=" ".join(spec))
    return out


def plot_pope(results: dict[str, dict], path: Path) -> None:
    """Grouped bars: accuracy, precision, recall, F1, yes-ratio per split."""
    from rwkv_mm.figures import pyplot, save_figure

    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    splits = list(results)
    fig, ax = pyplot().subplots(figsize=(7, 3.5))
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
    save_figure(fig, path, dpi=120)


def _make_answerer(args: argparse.Namespace) -> tuple[VisualAnswerer, str]:
    """The answerer for `args.checkpoint` and its model id (the checkpoint's name)."""
    from rwkv_mm.backbone import load_tokenizer
    from rwkv_mm.cpu import tune_malloc
    from rwkv_mm.training.adapter_cli import apply_adapter

    from .checkpoint import load_visual_rwkv
    from .preprocess import ImageProcessor

    tune_malloc()
    model, meta = load_visual_rwkv(args.checkpoint)
    model = apply_adapter(model, args.adapter)
    processor = ImageProcessor(model.vit.image_size, meta["vision"].pad_to_square)
    answerer = VisualAnswerer(model, load_tokenizer("world"), processor, meta["template"],
                              meta["image_position"], args.max_new_tokens, cache_images=not args.no_cache)
    return answerer, Path(args.checkpoint).name


def _limit(xs: list, n: int) -> list:
    return xs[:n] if n > 0 else xs


def _report_skipped(skipped: list[SkippedQuestion], total: int, listing: Path) -> None:
    """Print the skipped-questions line (and where the full list is)."""
    if skipped:
        print(f"{skipped_note(skipped, total)} (all listed in {listing})", file=sys.stderr)


def _cmd_gqa(args: argparse.Namespace) -> int:
    questions = _limit(read_gqa_questions(args.questions, args.images), args.limit)
    answerer, model_id = _make_answerer(args)
    out = Path(args.answers)
    skipped: list[SkippedQuestion] = []
    answers = answer_questions(answerer, questions, out, args.batch_size, model_id, "GQA",
                               checkpoint=args.checkpoint, benchmark="gqa", on_error=args.on_error,
                               skipped=skipped)
    write_gqa_predictions(answers, out.with_name(out.stem + "_predictions.json"))
    official = args.official or (args.questions if Path(args.questions).suffix == ".json" else None)
    score_path = out.with_name(out.stem + "_score.json")
    if official:
        result = score_gqa(questions, answers, read_official_gqa_answers(official), skipped)
        note = f"; {len(skipped)} skipped, not counted" if skipped else ""
        print(f"GQA accuracy: {100 * result['accuracy']:.2f}  ({result['n']} questions{note})")
        score_path.write_text(json.dumps(result, indent=2))
    else:
        print(f"answers in {out}; pass --official testdev_balanced_questions.json to score them")
        if skipped:
            score_path = out.with_name(out.stem + "_skipped.json")
            score_path.write_text(json.dumps({"n_skipped": len(skipped),
                                              "skipped": [s.to_json() for s in skipped]}, indent=2))
    _report_skipped(skipped, len(questions), score_path)
    return 0


def _cmd_pope(args: argparse.Namespace) -> int:
    files = pope_files(args.questions)
    answerer, model_id = _make_answerer(args)
    out_dir = Path(args.answers)
    results, skipped_by_split = {}, {}
    for split, path in files.items():
        questions, labels = read_pope_questions(path, args.images)
        questions, labels = _limit(questions, args.limit), _limit(labels, args.limit)
        skipped: list[SkippedQuestion] = []
        answers = answer_questions(answerer, questions, out_dir / f"{split}.jsonl", args.batch_size,
                                   model_id, f"POPE {split}", checkpoint=args.checkpoint,
                                   benchmark=f"pope/{split}", on_error=args.on_error, skipped=skipped)
        kept = [(answers[q.qid], label) for q, label in zip(questions, labels) if q.qid in answers]
        results[split] = pope_metrics([a for a, _ in kept], [label for _, label in kept])
        results[split]["n_skipped"] = len(skipped)
        skipped_by_split[split] = [s.to_json() for s in skipped]
        _report_skipped(skipped, len(questions), out_dir / "pope_summary.json")
    print(format_pope_table(results))
    summary = {"splits": results, "mean_f1": sum(r["f1"] for r in results.values()) / len(results),
               "cache": answerer.stats, "skipped": skipped_by_split}
    (out_dir / "pope_summary.json").write_text(json.dumps(summary, indent=2))
    plot_pope(results, out_dir / "pope.png")
    print(f"summary: {out_dir / 'pope_summary.json'}, chart: {out_dir / 'pope.png'}")
    return 0


def format_pope_table(results: dict[str, dict]) -> str:
    """A markdown table of the per-split metrics and the mean F1 (the paper's POPE number)."""
    lines = ["| split | accuracy | precision | recall | F1 | yes-ratio | n |", "|---|---|---|---|---|---|---|"]
    for split, r in results.items():
        n = f"{r['n']} ({r['n_skipped']} skipped, not counted)" if r.get("n_skipped") else f"{r['n']}"
        lines.append(f"| {split} | {100 * r['accuracy']:.2f} | {100 * r['precision']:.2f} | "
                     f"{100 * r['recall']:.2f} | {100 * r['f1']:.2f} | {100 * r['yes_ratio']:.2f} | {n} |")
    mean_f1 = sum(r["f1"] for r in results.values()) / len(results)
    lines.append(f"| **mean F1** | | | | **{100 * mean_f1:.2f}** | | |")
    return "\n".join(lines)

