"""The JSONL logs a run keeps per step (`metrics.jsonl`, a runner's own such as `map.jsonl`):
emptied when a run starts afresh, cut back to the checkpoint's step when it resumes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rwkv_mm.backbone import atomic_write

from .plot import read_jsonl
from .notices import warn


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line at the end of `path`."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def reset_step_logs(paths: Iterable[Path]) -> None:
    """A fresh run starts its logs anew."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def truncate_step_logs(paths: Iterable[Path], step: int) -> None:
    """On resume, drop the lines written after `step` (those steps will be redone) and a last
    line that a kill cut short (with a warning naming the file)."""
    for path in map(Path, paths):
        if not path.exists():
            continue
        rows, torn = read_jsonl(path)
        if torn is not None:
            warn(f"cutting a torn last line from {path}: {torn[:60]!r}")
        kept = [line for line, record in rows if record.get("step", 0) <= step]
        if torn is not None or len(kept) != len(rows):
            text = "".join(line + "\n" for line in kept)
            atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
