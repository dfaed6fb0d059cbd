"""Figures written by runs and evaluations (loss curves, per-position loss, POPE bars, AP bars).

    plt = pyplot()                        # matplotlib's pyplot on the file-only Agg backend
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ...
    save_figure(fig, run_dir / "loss.png")  # atomic (temp file + rename), then the figure is closed

matplotlib is imported on first use only: the modules that plot import this one at no cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rwkv_mm.backbone import atomic_write

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """`matplotlib.pyplot` with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: float | None = None) -> Path:
    """Write `fig` to `path` through a temp file + rename (a reader never sees half an image; a
    full disk is a `DiskFullError`), making its folder if needed, and close the figure, also when
    the write fails. The format follows the suffix (`.png` when matplotlib does not know it);
    `dpi` defaults to the figure's own. Returns the path written."""
    path = Path(path)
    plt = pyplot()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in fig.canvas.get_supported_filetypes():
            fmt = "png"
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi or "figure"))
    finally:
        plt.close(fig)
