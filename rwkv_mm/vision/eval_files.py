"""Readers of the GQA and POPE question files (LLaVA's evaluation formats and GQA's own)."""

from __future__ import annotations

import json
from pathlib import Path

from .answer import Question
from .data import resolve_image_path

GQA_SUFFIX = "Answer the question using a single word or phrase."


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {lineno}: expected an object")
            rows.append(row)
    return rows


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")


def read_gqa_questions(path: str | Path, images: str | Path) -> list[Question]:
    """LLaVA's `llava_gqa_testdev_balanced_questions.jsonl` ({question_id, image, text}) or the
    official `testdev_balanced_questions.json` ({qid: {imageId, question, ...}}; images are
    `<imageId>.jpg`, the LLaVA suffix is appended to each question)."""
    path, images = Path(path), Path(images)
    if not path.is_file():
        raise FileNotFoundError(f"GQA questions file not found: {path}")
    if path.suffix == ".jsonl":
        out = []
        for i, row in enumerate(_jsonl(path), 1):
            _need(row, ("question_id", "image", "text"), f"{path}, line {i}")
            qid = str(row["question_id"])
            out.append(Question(qid, resolve_image_path(images, row["image"], qid), row["text"]))
        return out
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected the official GQA format {{question_id: {{imageId, question}}}}")
    out = []
    for qid, row in data.items():
        _need(row, ("imageId", "question"), f"{path}, question {qid}")
        image = resolve_image_path(images, f"{row['imageId']}.jpg", qid)
        if not image.is_file():
            alt = next(iter(sorted(images.glob(f"{row['imageId']}.*"))), None)
            image = alt or image
        out.append(Question(str(qid), image, f"{row['question']}\n{GQA_SUFFIX}"))
    return out


def read_official_gqa_answers(path: str | Path) -> dict[str, str]:
    """question id -> answer from the official `testdev_balanced_questions.json`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GQA answers file (testdev_balanced_questions.json) not found: {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected the official GQA format {{question_id: {{answer, ...}}}}")
    out = {}
    for qid, row in data.items():
        _need(row, ("answer",), f"{path}, question {qid}")
        out[str(qid)] = row["answer"]
    return out


def read_pope_questions(path: str | Path, images: str | Path) -> tuple[list[Question], list[str]]:
    """A `coco_pope_<split>.json` file (JSON lines {question_id, image, text, label})."""
    path, images = Path(path), Path(images)
    if not path.is_file():
        raise FileNotFoundError(f"POPE questions file not found: {path}")
    questions, labels = [], []
    for i, row in enumerate(_jsonl(path), 1):
        _need(row, ("question_id", "image", "text", "label"), f"{path}, line {i}")
        qid = str(row["question_id"])
        if row["label"] not in ("yes", "no"):
            raise ValueError(f"{path}, line {i}: label {row['label']!r} is not yes/no")
        questions.append(Question(qid, resolve_image_path(images, row["image"], qid), row["text"]))
        labels.append(row["label"])
    return questions, labels
