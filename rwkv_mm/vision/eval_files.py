"""Readers of the GQA and POPE question files (LLaVA's evaluation formats and GQA's own).

Every problem is a UserError naming the file and line (or question id): invalid JSON, a missing
key, an `image` that is not a path string or leaves the image folder, a POPE label other than
yes/no, and a question id used twice (`1` and `"1"` are the same id: answers are keyed by its
text, so the second question would silently take the first one's place).
"""

from __future__ import annotations

import json
from pathlib import Path

from rwkv_mm.errors import UserError

from .answer import Question
from .data import resolve_image_path

GQA_SUFFIX = "Answer the question using a single word or phrase."


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-empty line of a JSON-lines file."""
    rows = []
    with open(path, encoding="utf-8") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise UserError(f"not valid JSON ({err})", where=f"{path}, line {lineno}") from None
                if not isinstance(row, dict):
                    raise UserError("expected a JSON object", where=f"{path}, line {lineno}")
                rows.append((lineno, row))
        except UnicodeDecodeError as err:
            raise UserError(f"not UTF-8 text ({err})", where=str(path)) from None
    return rows


def _json(path: Path, what: str) -> dict:
    """A JSON object file whose duplicate keys are an error (json keeps the last silently)."""
    def pairs(items: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key in out:
                raise UserError(f"key {key!r} appears twice in one JSON object (a question id used "
                                "twice, or a field repeated in one question)", where=str(path),
                                fix="question ids must be unique")
            out[key] = value
        return out

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=pairs)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"not valid JSON ({err})", where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"expected the official GQA format {what}", where=str(path))
    return data


def _need(row: object, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(row, dict):
        raise UserError(f"expected an object with keys {list(keys)}", where=where)
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(f"missing key(s) {missing}", where=where)


class _UniqueIds:
    """Question ids of one file, refusing the second use of an id (naming both lines)."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, {}

    def __call__(self, raw_id: object, lineno: int) -> str:
        qid = str(raw_id)
        if qid in self.seen:
            raise UserError(f"question id {raw_id!r} appears twice (lines {self.seen[qid]} and {lineno}; "
                            f"ids are compared as text, so 1 and \"1\" are the same)",
                            where=str(self.path), fix="question ids must be unique")
        self.seen[qid] = lineno
        return qid


def read_gqa_questions(path: str | Path, images: str | Path) -> list[Question]:
    """LLaVA's `llava_gqa_testdev_balanced_questions.jsonl` ({question_id, image, text}) or the
    official `testdev_balanced_questions.json` ({qid: {imageId, question, ...}}; images are
    `<imageId>.jpg`, the LLaVA suffix is appended to each question)."""
    path, images = Path(path), Path(images)
    if not path.is_file():
        raise FileNotFoundError(f"GQA questions file not found: {path}")
    if path.suffix == ".jsonl":
        unique, out = _UniqueIds(path), []
        for lineno, row in _jsonl(path):
            where = f"{path}, line {lineno}"
            _need(row, ("question_id", "image", "text"), where)
            qid = unique(row["question_id"], lineno)
            image = resolve_image_path(images, row["image"], f"question {qid} ({where})")
            out.append(Question(qid, image, _text(row["text"], where)))
        return out
    data = _json(path, "{question_id: {imageId, question}}")
    out = []
    for qid, row in data.items():
        where = f"{path}, question {qid}"
        _need(row, ("imageId", "question"), where)
        image = resolve_image_path(images, f"{row['imageId']}.jpg", f"question {qid} ({where})")
        if not image.is_file():
            alt = next(iter(sorted(images.glob(f"{row['imageId']}.*"))), None)
            image = alt or image
        out.append(Question(str(qid), image, f"{_text(row['question'], where)}\n{GQA_SUFFIX}"))
    return out


def read_official_gqa_answers(path: str | Path) -> dict[str, str]:
    """question id -> answer from the official `testdev_balanced_questions.json`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GQA answers file (testdev_balanced_questions.json) not found: {path}")
    data = _json(path, "{question_id: {answer, ...}}")
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
    unique, questions, labels = _UniqueIds(path), [], []
    for lineno, row in _jsonl(path):
        where = f"{path}, line {lineno}"
        _need(row, ("question_id", "image", "text", "label"), where)
        qid = unique(row["question_id"], lineno)
        if row["label"] not in ("yes", "no"):
            raise UserError(f"label {row['label']!r} is not yes/no", where=where)
        image = resolve_image_path(images, row["image"], f"question {qid} ({where})")
        questions.append(Question(qid, image, _text(row["text"], where)))
        labels.append(row["label"])
    return questions, labels


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"the question text is {json.dumps(value)}, not a string", where=where)
    return value
