"""GQA and POPE scoring rules (LLaVA's evaluation scripts' conventions)."""

from __future__ import annotations

from collections.abc import Sequence


def normalize_gqa_answer(text: str) -> str:
    """Strip whitespace and one trailing '.', lowercase (then exact match)."""
    text = text.strip()
    if text.endswith("."):
        text = text[:-1]
    return text.strip().lower()


def gqa_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Exact-match accuracy after normalising both sides."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        return float("nan")
    hits = sum(normalize_gqa_answer(p) == normalize_gqa_answer(a) for p, a in zip(predictions, answers))
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
