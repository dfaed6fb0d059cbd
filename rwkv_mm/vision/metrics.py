"""GQA and POPE scoring rules (LLaVA's evaluation scripts' conventions).

GQA as LLaVA-1.5 scores it (VisualRWKV's `eval_gqa.sh` runs the same converter), in three steps:

1. `llava/eval/model_vqa_loader.py` writes the decoded output `.strip()`-ed as the answer's "text"
   (our `VisualAnswerer` strips its answers the same way);
2. `scripts/convert_gqa_for_eval.py` turns each "text" into `text.rstrip('.').lower()` (every
   trailing period, no second strip) and writes `[{"questionId", "prediction"}]`;
3. the official GQA `eval.py` counts `prediction == answer` (exact, the official answer as is).

So 'Yes..' -> 'yes' (right), 'No...' -> 'no', but 'yes .' -> 'yes ' (wrong: the space stays).
"""

from __future__ import annotations

from collections.abc import Sequence


def llava_gqa_prediction(text: str) -> str:
    """Step 2, `convert_gqa_for_eval.py` on an answers file's "text": `text.rstrip('.').lower()`."""
    return text.rstrip(".").lower()


def normalize_gqa_answer(text: str) -> str:
    """A decoded answer as LLaVA's protocol scores it: strip (step 1), then step 2.

    On the "text" of an answers file (stripped when it was written, ours as LLaVA's) this is
    exactly `llava_gqa_prediction`, i.e. what LLaVA's converter writes."""
    return llava_gqa_prediction(text.strip())


def gqa_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Exact-match accuracy (step 3): `normalize_gqa_answer(prediction) == answer`, the official
    answer compared as it is (GQA's answers are lowercase words without punctuation)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        return float("nan")
    hits = sum(normalize_gqa_answer(p) == a for p, a in zip(predictions, answers))
    return hits / len(answers)


def parse_pope_answer(text: str) -> str:
    """POPE's yes/no parsing: keep the text before the first '.', drop commas, split on spaces;
    any word in {No, no, not} means "no", anything else (the empty answer included) "yes"."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if any(w in ("No", "no", "not") for w in words) else "yes"


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive = "yes") and the yes-ratio of the predictions.

    `predictions` are raw model answers (parsed here); `labels` are "yes"/"no"."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    parsed = [parse_pope_answer(p) for p in predictions]
    for i, label in enumerate(labels):
        if label not in ("yes", "no"):
            raise ValueError(f"label {i}: {label!r} is not 'yes' or 'no'")
    tp = sum(p == "yes" and l == "yes" for p, l in zip(parsed, labels))
    fp = sum(p == "yes" and l == "no" for p, l in zip(parsed, labels))
    tn = sum(p == "no" and l == "no" for p, l in zip(parsed, labels))
    fn = sum(p == "no" and l == "yes" for p, l in zip(parsed, labels))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n if n else float("nan"), "precision": precision, "recall": recall,
            "f1": f1, "yes_ratio": (tp + fp) / n if n else float("nan"), "n": n,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}
