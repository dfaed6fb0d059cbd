"""Tune corpora: IrishMAN JSON, .abc files and folders, and the LM dataset built from them.

IrishMAN items are `{"control code": "S:2\\nB:9\\n...", "abc notation": "X:1\\nL:1/8\\n..."}`;
a tune's text is its control code followed by the ABC without its `X:` line. `.abc` files may
hold many tunes, each starting at an `X:` line. Tunes that are empty or have no `K:` (key) field
are not mixed in: they are listed in the report with file and index (or raise in strict mode).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .tokenizer import ByteTokenizer

IGNORE_INDEX = -100
_X_LINE = re.compile(r"^X:[^\n]*\n?", re.MULTILINE)
_KEY_FIELD = re.compile(r"^K:", re.MULTILINE)


@dataclass
class CorpusReport:
    """Tunes read and those left out, as (file, index, reason)."""

    kept: int = 0
    problems: list[tuple[str, int, str]] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.kept} tunes kept, {len(self.problems)} left out"


def strip_x_line(abc: str) -> str:
    """The tune without its `X:` reference-number line."""
    return _X_LINE.sub("", abc, count=1)


def split_abc_file(text: str) -> list[str]:
    """Tunes of a multi-tune .abc file: each starts at a line beginning with `X:`."""
    starts = [m.start() for m in re.finditer(r"^X:", text, re.MULTILINE)]
    return [text[a:b].strip() + "\n" for a, b in zip(starts, starts[1:] + [len(text)])]


def _problem(abc: str) -> str | None:
    body = strip_x_line(abc).strip()
    if not body:
        return "empty tune"
    if not _KEY_FIELD.search(body):
        return "no K: (key) field"
    if "|" not in body:
        return "no bar lines"
    return None


def load_tunes(path: str | Path, strict: bool = False) -> tuple[list[str], CorpusReport]:
    """Tune texts of an IrishMAN JSON file, an .abc file or a folder of .abc files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tune corpus not found: {path}")
    report = CorpusReport()
    tunes: list[str] = []

    def add(text: str, abc: str, source: Path, index: int) -> None:
        reason = _problem(abc)
        if reason:
            if strict:
                raise ValueError(f"{source}: tune {index}: {reason}")
            report.problems.append((str(source), index, reason))
        else:
            tunes.append(text)
            report.kept += 1

    files = sorted(path.rglob("*.abc")) if path.is_dir() else [path]
    for file in files:
        if file.suffix == ".json":
            try:
                items = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}: not valid JSON ({err})") from None
            if not isinstance(items, list):
                raise ValueError(f"{file}: expected a JSON list of IrishMAN items")
            for i, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("abc notation"), str):
                    reason = "item has no 'abc notation' string"
                    if strict:
                        raise ValueError(f"{file}: tune {i}: {reason}")
                    report.problems.append((str(file), i, reason))
                    continue
                abc = item["abc notation"]
                add(str(item.get("control code", "")) + strip_x_line(abc), abc, file, i)
        else:
            for i, abc in enumerate(split_abc_file(file.read_text(encoding="utf-8", errors="replace"))):
                add(strip_x_line(abc), abc, file, i)
    return tunes, report


class TuneDataset(Dataset):
    """One sample per tune: [2] + bytes + [3], cut to ctx_len + 1 tokens; inputs are all but the
    last token, targets all but the first (next-byte prediction)."""

    def __init__(self, tunes: list[str], ctx_len: int) -> None:
        tok = ByteTokenizer()
        self.samples = [torch.tensor(tok.encode_tune(t)[: ctx_len + 1]) for t in tunes]
        self.samples = [s for s in self.samples if len(s) >= 2]
        self.tokenizer_stats = tok.stats

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        return {"input_ids": s[:-1], "targets": s[1:]}


def collate_tunes(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad to the longest sample: input_ids with 0 (pad), targets with -100 (no loss)."""
    T = max(len(s["input_ids"]) for s in samples)
    inputs = torch.zeros(len(samples), T, dtype=torch.long)
    targets = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        inputs[i, :n] = s["input_ids"]
        targets[i, :n] = s["targets"]
    return {"input_ids": inputs, "targets": targets}
