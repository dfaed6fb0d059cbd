"""AudioSet-style multi-label clip datasets: the official CSVs or AST's JSON manifest.

Files read:
- `class_labels_indices.csv`: header `index,mid,display_name`, then one class per line
  (527 for AudioSet; display names may be quoted and hold commas);
- segment CSVs (`balanced_train_segments.csv`, `eval_segments.csv`, ...): three `#` header lines,
  then `YTID, start_seconds, end_seconds, "mid1,mid2,..."`. Clips are found in folders by
  name: `<YTID>.<ext>` or `Y<YTID>.<ext>` (ext wav/flac/ogg/mp3), optionally with the start
  time appended as `<YTID>_<start>` (`_30000` ms or `_30.000` s as downloaders write it);
- AST's JSON manifest: `{"data": [{"wav": path, "labels": "mid1,mid2"}]}` (a bare list works
  too; `labels` may be a list); relative paths are relative to the manifest's folder.

Bad clips never stop a run. Lines that cannot be parsed, unknown mids, clips without a known
label and files that are missing are dropped when the list is built; unreadable files, files
with NaN/Inf samples, silent ones and ones too short (under `min_seconds`, and always under one
fbank window) are found when first loaded, remembered, and replaced by the next good clip
(training) or skipped (evaluation). Every case is counted by reason in a `ProblemLog` with a
few examples naming the file and line. A broken class list or clip list itself (bad header,
invalid JSON, ...) is a `UserError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rwkv_mm.errors import UserError

from ..io import AUDIO_EXTENSIONS

#: Reasons a clip is left out, in report order.
REASONS = ("bad_line", "unknown_label", "no_labels", "missing", "unreadable", "non_finite", "silent",
           "too_short")


@dataclass
class ProblemLog:
    """Counts of dropped clips (and label entries) by reason, with the first few examples."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(f"{where}: {detail}" if detail else where)

    @property
    def n_bad_clips(self) -> int:
        """Clips left out (an unknown mid on a clip that keeps other labels is not a bad clip)."""
        return sum(n for r, n in self.counts.items() if r != "unknown_label")

    def summary(self) -> dict[str, int]:
        return {r: self.counts[r] for r in REASONS if self.counts[r]}

    def format(self, title: str = "clips left out") -> str:
        """Multi-line report: one line per reason with its count and examples."""
        if not self.counts:
            return f"{title}: none"
        lines = [f"{title}: " + ", ".join(f"{r} {n}" for r, n in self.summary().items())]
        for reason in REASONS:
            for ex in self.examples.get(reason, []):
                lines.append(f"  [{reason}] {ex}")
        return "\n".join(lines)


@dataclass
class ClipRecord:
    """One clip: its file (None when missing), label indices and where it was listed."""

    key: str
    path: Path | None
    labels: list[int]
    where: str  # "file:line" of its entry


@dataclass
class ClassList:
    """The label vocabulary: mids and display names by index."""

    mids: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.mids)

    @property
    def index(self) -> dict[str, int]:
        return {m: i for i, m in enumerate(self.mids)}


def read_class_labels(path: str | Path) -> ClassList:
    """Read `class_labels_indices.csv` (index,mid,display_name). Indices must run 0, 1, 2, ...;
    errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path}")
    mids, names = [], []
    rows = _csv_rows(path)
    header = rows[0][1] if rows else None
    if header is None or [h.strip() for h in header[:3]] != ["index", "mid", "display_name"]:
        raise UserError(f"expected the header 'index,mid,display_name', got {header}", where=f"{path}:1")
    for lineno, row in rows[1:]:
        if not row or not "".join(row).strip():
            continue
        where = f"{path}:{lineno}"
        if len(row) < 3:
            raise UserError(f"expected index,mid,display_name, got {row}", where=where)
        try:
            index = int(row[0])
        except ValueError:
            raise UserError(f"index {row[0]!r} is not an integer", where=where) from None
        if index != len(mids):
            raise UserError(f"index {index}, expected {len(mids)}", where=where, fix="indices must run 0, 1, 2, ...")
        mid = row[1].strip()
        if mid in mids:
            raise UserError(f"mid {mid!r} listed twice", where=where)
        mids.append(mid)
        names.append(",".join(row[2:]).strip())
    if not mids:
        raise UserError("no classes", where=str(path), fix="expected the header, then index,mid,display_name lines")
    return ClassList(mids, names)


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every row of a UTF-8 CSV file; a file that is not UTF-8 text or
    a malformed row is a UserError naming the file (and line)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise UserError(f"not a UTF-8 text file ({err.reason} at byte {err.start})", where=str(path)) from None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    rows = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as err:
        raise UserError(f"malformed CSV ({err})", where=f"{path}:{reader.line_num}") from None
    return rows


def index_clip_folders(folders: list[str | Path]) -> dict[str, Path]:
    """Map each audio file's stem (and the stem without a leading 'Y') to its path, for every
    file with an audio extension directly in `folders` (one directory listing each)."""
    found: dict[str, Path] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"clip folder not found: {folder}")
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in AUDIO_EXTENSIONS:
                    path = Path(entry.path)
                    found.setdefault(stem, path)
                    if stem.startswith("Y"):
                        found.setdefault(stem[1:], path)
    return found


def _split_labels(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [m.strip() for m in raw.split(",") if m.strip()]
    if isinstance(raw, list) and all(isinstance(m, str) for m in raw):
        return [m.strip() for m in raw if m.strip()]
    raise UserError(f"labels must be a comma-separated string or a list of mids, got {raw!r:.80}")


def _label_indices(mids: list[str], classes: dict[str, int], where: str, problems: ProblemLog) -> list[int]:
    out = []
    for mid in mids:
        if mid in classes:
            if classes[mid] not in out:
                out.append(classes[mid])
        else:
            problems.add("unknown_label", where, f"mid {mid!r} is not in the class list")
    return out


def read_segments(path: str | Path, classes: ClassList, clips: dict[str, Path],
                  problems: ProblemLog) -> list[ClipRecord]:
    """Clips of an AudioSet segment CSV whose file is in `clips` (see `index_clip_folders`).

    Lines starting with '#' are headers. Malformed lines, unknown mids, label-less clips and
    missing files are counted in `problems` and left out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segment list not found: {path}")
    index, records = classes.index, []
    for lineno, row in _csv_rows(path):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if len(row) < 4:
            problems.add("bad_line", where, f"expected YTID, start, end, labels; got {row}")
            continue
        ytid, start = row[0].strip(), row[1].strip()
        try:
            start_s = float(start)
        except ValueError:
            start_s = math.nan
        if not (math.isfinite(start_s) and start_s >= 0):
            problems.add("bad_line", where, f"start time {start!r} is not a number >= 0")
            continue
        labels = _label_indices(_split_labels(",".join(row[3:])), index, where, problems)
        if not labels:
            problems.add("no_labels", where, f"{ytid}: no known label")
            continue
        file = (clips.get(ytid) or clips.get(f"{ytid}_{start}")
                or clips.get(f"{ytid}_{int(round(start_s * 1000))}") or clips.get(f"{ytid}_{int(start_s)}"))
        if file is None:
            problems.add("missing", where, f"no audio file for {ytid}")
            continue
        records.append(ClipRecord(ytid, file, labels, where))
    return records


def read_manifest(path: str | Path, classes: ClassList, problems: ProblemLog) -> list[ClipRecord]:
    """Clips of an AST-style JSON manifest ({"data": [{"wav", "labels"}]} or a bare list)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"not valid JSON ({err})", where=str(path)) from None
    items = tree.get("data") if isinstance(tree, dict) else tree
    if not isinstance(items, list):
        raise UserError("expected {\"data\": [...]} or a list of {\"wav\", \"labels\"} items", where=str(path))
    index, records = classes.index, []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("wav"), str) or "labels" not in item:
            problems.add("bad_line", where, f"expected {{\"wav\": path, \"labels\": mids}}, got {item!r:.80}")
            continue
        try:
            mids = _split_labels(item["labels"])
        except UserError as err:
            problems.add("bad_line", where, str(err))
            continue
        labels = _label_indices(mids, index, where, problems)
        if not labels:
            problems.add("no_labels", where, f"{item['wav']}: no known label")
            continue
        wav = Path(item["wav"])
        wav = wav if wav.is_absolute() else path.parent / wav
        if not wav.is_file():
            problems.add("missing", where, f"{wav}: no such file")
            continue
        records.append(ClipRecord(wav.stem, wav, labels, where))
    return records


def read_clip_list(path: str | Path, classes: ClassList, clip_dirs: list[str | Path] | None,
                   problems: ProblemLog, clip_index: dict[str, Path] | None = None) -> list[ClipRecord]:
    """A segment CSV (clips looked up in `clip_dirs`) or a JSON manifest, by extension."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_manifest(path, classes, problems)
    if path.suffix.lower() == ".csv":
        if clip_index is None:
            if not clip_dirs:
                raise UserError("a segment CSV needs clip folders", where=str(path), fix="set data.clip_dirs")
            clip_index = index_clip_folders(list(clip_dirs))
        return read_segments(path, classes, clip_index, problems)
    raise UserError("expected a segment list (.csv) or a JSON manifest (.json)", where=str(path))
