"""Figures of a tagging run: per-class average precision, and mAP against training step."""

from __future__ import annotations

from pathlib import Path

from rwkv_mm.figures import pyplot, save_figure


def plot_tagging(ap: list[float], names: list[str], out_path: str | Path,
                 history: list[tuple[int, float]] | None = None, title: str = "") -> Path:
    """Horizontal bars of AP per class (the 30 worst when there are more), and beside them the
    mAP history [(step, mAP)] when given. Writes a PNG and returns its path."""
    import math

    pairs = sorted((a, n) for a, n in zip(ap, names) if not math.isnan(a))
    shown = pairs[:30]
    ncols = 2 if history else 1
    fig, axes = pyplot().subplots(1, ncols, figsize=(6 * ncols, 0.28 * len(shown) + 1.5), dpi=110, squeeze=False)
    ax = axes[0][0]
    ax.barh([n for _, n in shown], [a for a, _ in shown], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    mean = sum(a for a, _ in pairs) / max(len(pairs), 1)
    ax.set_title(f"per-class AP ({'worst 30 of ' if len(pairs) > 30 else ''}{len(pairs)} classes), mAP {mean:.3f}")
    ax.grid(axis="x", alpha=0.3)
    if history:
        hx = axes[0][1]
        hx.plot(*zip(*history), "o-")
        hx.set_xlabel("step")
        hx.set_ylabel("mAP (eval)")
        hx.set_ylim(0, 1)
        hx.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_path)
