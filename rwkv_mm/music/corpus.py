"""Tune corpora: IrishMAN JSON, .abc files and folders, and the LM dataset built from them.

Reading (:func:`load_tunes`):

* IrishMAN JSON: a list of ``{"control code": "S:2\\nB:9\\n...", "abc notation": "X:1\\nL:1/8\\n..."}``;
  a tune's text is its control code followed by the ABC without its ``X:`` line.
* ``.abc`` files may hold many tunes, each starting at a line beginning ``X:`` (text before the
  first ``X:`` is the file header and is not a tune; a file with no ``X:`` line but a ``K:``
  field is one tune). A tune's text is the ABC without its ``X:`` line.
* A folder: every ``*.abc`` below it, in sorted path order (JSON files in a folder are not read:
  IrishMAN's train and validation files would be mixed).

Tunes that are empty, have no ``K:`` (key) field, no music after it, or no bar lines are not
mixed in: each is listed in the :class:`CorpusReport` as (file, index, reason), index counting
from 0 within the file; ``strict=True`` raises :class:`CorpusError` at the first one instead.
A binary file (a NUL byte) is such a problem too (index -1: the whole file). Invalid JSON, a JSON that is not a
list, a folder without .abc files, or a corpus that yields no tune at all raise
:class:`CorpusError` naming the file (and, for JSON, the line and column).

Training samples (:class:`TuneDataset`): one sample per tune, ``[2] + bytes + [3]`` cut to
``ctx_len + 1`` tokens (tunes are not concatenated: position 0 is always a tune's start, as in
the paper's per-position evaluation). :func:`collate_tunes` pads inputs with 0 and targets with
-100 (``IGNORE_INDEX``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.errors import UserError

from .tokenizer import ByteStats, ByteTokenizer

_X_LINE = re.compile(r"^X:[^\n]*(\n|$)", re.MULTILINE)
_X_START = re.compile(r"^X:", re.MULTILINE)
_FIELD = re.compile(r"^([A-Za-z]):(.*)$")
_KEY_FIELD = re.compile(r"^K:", re.MULTILINE)
_BODY_FIELDS = "IKLMmNPQRrsTUVWw"  # fields that may appear inside the tune body


def _field(line: str, in_body: bool) -> re.Match | None:
    """The field a line is (``K:G`` → name K, value G), or None for music. In the body only
    the fields allowed there count, and ``d:|`` (a note before a repeat) is music."""
    m = _FIELD.match(line)
    if m and in_body and (m.group(1) not in _BODY_FIELDS or m.group(2).startswith("|")):
        return None
    return m


class TuneProblem(NamedTuple):
    """A tune left out: the file, the tune's index in it (from 0; -1: the whole file) and why."""

    path: str
    index: int
    reason: str


def _describe(p: TuneProblem) -> str:
    """`file: tune i: reason` (`file: reason` for the whole file)."""
    if p.index < 0:
        return f"{p.path}: {p.reason}"
    return f"{p.path}: tune {p.index}: {p.reason}"


class CorpusError(UserError):
    """A malformed corpus file or tune (strict mode), naming file and tune index."""


@dataclass
class CorpusReport:
    """Files read, tunes read and kept, and those left out with file, index and reason."""

    files: list[str] = field(default_factory=list)
    read: int = 0
    kept: int = 0
    problems: list[TuneProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a file that was not UTF-8

    def reasons(self) -> Counter:
        """How many tunes were left out for each reason."""
        return Counter(p.reason for p in self.problems)

    def summary(self) -> str:
        text = f"{self.read} tunes read from {len(self.files)} file(s), {self.kept} kept, {len(self.problems)} left out"
        if self.problems:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons().items())) + ")"
        return text


def strip_x_line(abc: str) -> str:
    """The tune without its (first) ``X:`` reference-number line."""
    return _X_LINE.sub("", abc, count=1)


def split_abc_file(text: str) -> list[str]:
    """Tunes of a multi-tune .abc file: each starts at a line beginning with ``X:`` and ends
    before the next one; trailing blank lines are removed and each tune ends with a newline.
    Text before the first ``X:`` is the file header, not a tune; a text with no ``X:`` line at
    all is one tune if it has a ``K:`` field, else none."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    starts = [m.start() for m in _X_START.finditer(text)]
    if not starts:
        return [text.strip("\n") + "\n"] if _KEY_FIELD.search(text) else []
    return [text[a:b].rstrip() + "\n" for a, b in zip(starts, starts[1:] + [len(text)])]


def _music_lines(abc: str) -> list[str]:
    """Lines after the first K: field that are music (not fields, comments or blank)."""
    lines = abc.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("K:"):
            return [l for l in lines[i + 1:]
                    if l.strip() and not _field(l, True) and not l.lstrip().startswith("%")]
    return []


def tune_problem(abc: str) -> str | None:
    """Why this tune (with or without its ``X:`` line) cannot be used, or None if it can."""
    body = strip_x_line(abc)
    if not any(l.strip() and not l.lstrip().startswith("%") for l in body.splitlines()):
        return "empty tune"
    if not _KEY_FIELD.search(body):
        return "no K: (key) field"
    music = _music_lines(body)
    if not music:
        return "no music after the K: field"
    if not any("|" in l for l in music):
        return "no bar lines"
    return None


#: Header fields kept by :func:`clean_abc` (IrishMAN keeps the musical ones: L, M, K; P and V
#: carry the structure of multi-part tunes).
MUSIC_FIELDS = "LMKPV"


def _strip_comment(line: str) -> str:
    """A music line without its trailing ``% comment`` (a ``%`` outside ``"..."`` text)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "%" and not quoted and (i == 0 or line[i - 1] != "\\"):
            return line[:i].rstrip()
    return line


def clean_abc(abc: str, keep_fields: str = MUSIC_FIELDS) -> str:
    """IrishMAN-style text of a tune: no ``X:`` line; of the header only the `keep_fields`
    fields, in the order L, M, other kept fields, K (K stays last: it ends the header); in the
    body, music lines (comments removed) and the kept inline fields (a meter or key change);
    titles, notes, sources, lyrics (``w:``/``W:``), ``%`` comments and ``%%`` directives go.
    Field values lose the space after the colon (``K: G`` → ``K:G``)."""
    lines = strip_x_line(abc.replace("\r\n", "\n")).splitlines()
    head: dict[str, list[str]] = {}
    body: list[str] = []
    in_body = False
    for line in lines:
        if not line.strip() or line.lstrip().startswith("%"):
            continue
        m = _field(line, in_body)
        if m:
            name, value = m.group(1), m.group(2).strip()
            if name not in keep_fields:
                continue
            if in_body:
                body.append(f"{name}:{value}")
            else:
                head.setdefault(name, []).append(f"{name}:{value}")
                if name == "K":
                    in_body = True
            continue
        if not in_body:
            continue  # stray text in the header
        line = _strip_comment(line.rstrip())
        if line.strip():
            body.append(line)
    order = ["L", "M", *[n for n in head if n not in "LMK"], "K"]
    out = [l for n in order for l in head.get(n, [])]
    return "\n".join(out + body) + "\n"


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _read_text(file: Path, report: CorpusReport) -> str | None:
    """The file's text (UTF-8 with or without a BOM, UTF-16 with a BOM, else Latin-1 with a
    note), or None for a binary file (a NUL byte: never in ABC or JSON text)."""
    raw = file.read_bytes()
    if raw.startswith(_UTF16_BOMS):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            pass
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        report.notes.append(f"{file}: not UTF-8, read as Latin-1")
        return raw.decode("latin-1")


def load_tunes(path: str | Path, strict: bool = False) -> tuple[list[str], CorpusReport]:
    """Tune texts of an IrishMAN JSON file, an .abc file or a folder of .abc files, and the
    report of what was read and left out (see the module docstring). Texts are returned as
    read (the byte tokenizer applies the non-ASCII policy when encoding). A corpus without a
    single usable tune raises :class:`CorpusError` ("no tunes in PATH: ...")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tune corpus not found: {path}")
    report = CorpusReport()
    tunes: list[str] = []

    def problem(source: Path, index: int, reason: str) -> None:
        item = TuneProblem(str(source), index, reason)
        if strict:
            raise CorpusError(_describe(item))
        report.problems.append(item)

    def add(text: str, abc: str, source: Path, index: int) -> None:
        reason = tune_problem(abc)
        if reason:
            problem(source, index, reason)
        else:
            tunes.append(text)
            report.kept += 1

    if path.is_dir():
        files = sorted(p for p in path.rglob("*.abc") if p.is_file())
        if not files:
            raise CorpusError(f"{path}: no .abc files in this folder")
    else:
        files = [path]
    for file in files:
        report.files.append(str(file))
        text = _read_text(file, report)
        if text is None:
            problem(file, -1, "a binary file, not ABC or JSON text")
            continue
        if file.suffix.lower() == ".json":
            try:
                items = json.loads(text)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{file}: not valid JSON ({err})") from None
            if not isinstance(items, list):
                raise CorpusError(f"{file}: expected a JSON list of IrishMAN items, got {type(items).__name__}")
            for i, item in enumerate(items):
                report.read += 1
                if not isinstance(item, dict) or not isinstance(item.get("abc notation"), str):
                    problem(file, i, "item has no 'abc notation' string")
                    continue
                code = item.get("control code", "")
                if not isinstance(code, str):
                    problem(file, i, "'control code' is not a string")
                    continue
                if code and not code.endswith("\n"):
                    code += "\n"
                abc = item["abc notation"]
                add(code + strip_x_line(abc), abc, file, i)
        else:
            for i, abc in enumerate(split_abc_file(text)):
                report.read += 1
                add(strip_x_line(abc), abc, file, i)
    if not tunes:
        raise CorpusError(f"no tunes in {path}", fix=_why_empty(report))
    return tunes, report


def _why_empty(report: CorpusReport, show: int = 3) -> str:
    """Why a corpus gave no tune: the first problems, or what a tune looks like."""
    if not report.problems:
        return ("no tune found (an .abc tune starts at an 'X:' line or has a 'K:' field; IrishMAN "
                "JSON is a non-empty list of {'control code', 'abc notation'} items)")
    shown = "; ".join(_describe(p) for p in report.problems[:show])
    more = len(report.problems) - show
    return f"{len(report.problems)} left out ({shown}{f'; {more} more' if more > 0 else ''})"


class TuneDataset(Dataset):
    """One sample per tune, in the given order: ``[2] + bytes + [3]`` cut to ``ctx_len + 1``
    tokens; ``input_ids`` are all but the last token, ``targets`` all but the first (next-byte
    prediction), so a sample is at most ``ctx_len`` long. A cut tune loses its end (and its end
    token); ``n_truncated`` counts them. ``tokenizer_stats`` holds the non-ASCII policy's counts.
    Deterministic: no randomness here (the trainer's sampler shuffles)."""

    def __init__(self, tunes: list[str], ctx_len: int, tokenizer: ByteTokenizer | None = None) -> None:
        if ctx_len < 1:
            raise ValueError(f"ctx_len must be >= 1, got {ctx_len}")
        tok = tokenizer or ByteTokenizer()
        self.ctx_len = ctx_len
        self.samples: list[torch.Tensor] = []
        self.n_truncated = 0
        for text in tunes:
            ids = tok.encode_tune(text)
            if len(ids) > ctx_len + 1:
                self.n_truncated += 1
                ids = ids[: ctx_len + 1]
            self.samples.append(torch.tensor(ids, dtype=torch.long))
        self.tokenizer_stats: ByteStats = tok.stats

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        return {"input_ids": s[:-1], "targets": s[1:]}


def collate_tunes(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad to the longest sample: ``input_ids`` [B, T] with 0 (pad), ``targets`` [B, T] with
    -100 (no loss there)."""
    if not samples:
        raise ValueError("collate_tunes: empty batch")
    T = max(len(s["input_ids"]) for s in samples)
    inputs = torch.full((len(samples), T), ByteTokenizer.pad_id, dtype=torch.long)
    targets = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        inputs[i, :n] = s["input_ids"]
        targets[i, :n] = s["targets"]
    return {"input_ids": inputs, "targets": targets}
