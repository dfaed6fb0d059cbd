"""Loss-curve PNG from a run's metrics.jsonl, and reading such JSONL logs back."""

from __future__ import annotations

import json
from pathlib import Path

from rwkv_mm.errors import UserError
from rwkv_mm.figures import pyplot, save_figure


def read_jsonl(path: str | Path) -> tuple[list[tuple[str, dict]], str | None]:
    """The (line, record) pairs of a JSONL log, and the text of a last line that is not a whole
    JSON object (a write cut short by a kill; None when there is none). A bad line before the
    last is a `UserError` naming the file and line: that is not a torn write."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows: list[tuple[str, dict]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if number == len(lines):
                return rows, line
            raise UserError(f"line {number} is not a JSON object ({line[:60]!r})", where=str(path),
                            fix="repair or remove that line") from None
        rows.append((line, record))
    return rows, None


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file (missing file → empty list; a torn last line is left
    out)."""
    path = Path(path)
    if not path.exists():
        return []
    return [record for _, record in read_jsonl(path)[0]]


def plot_metrics(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Plot training loss (and validation loss when present) against step; writes a PNG."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", lw=1.5, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(Path(out_path).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out_path)
