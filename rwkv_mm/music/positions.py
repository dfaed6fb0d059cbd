"""Loss at every position of held-out tunes (the paper's Figure 8), smoothed and plotted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.figures import pyplot, save_figure


@torch.no_grad()
def per_position_loss(model, sequences: Sequence[Sequence[int]], max_len: int,
                      batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Mean next-token loss at each position over `sequences` (token ids incl. begin/end).

    Position p is the prediction of token p+1 from tokens 0..p. Sequences longer than
    `max_len + 1` are cut. Returns (mean loss [max_len], number of sequences per position)."""
    device = next(model.parameters()).device
    total = np.zeros(max_len)
    count = np.zeros(max_len)
    seqs = [list(s[: max_len + 1]) for s in sequences if len(s) >= 2]
    model.eval()
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        T = max(len(s) for s in chunk) - 1
        inputs = torch.zeros(len(chunk), T, dtype=torch.long)
        targets = torch.full((len(chunk), T), IGNORE_INDEX, dtype=torch.long)
        for i, s in enumerate(chunk):
            inputs[i, : len(s) - 1] = torch.tensor(s[:-1])
            targets[i, : len(s) - 1] = torch.tensor(s[1:])
        logits, _ = model(inputs.to(device))
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets.to(device),
                               ignore_index=IGNORE_INDEX, reduction="none").cpu().numpy()  # [B, T]
        valid = (targets != IGNORE_INDEX).numpy()
        total[:T] += (loss * valid).sum(0)
        count[:T] += valid.sum(0)
    mean = np.divide(total, count, out=np.full(max_len, np.nan), where=count > 0)
    return mean, count


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over positions (NaNs ignored; weights renormalised at the edges)."""
    if sigma <= 0:
        return values.copy()
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    valid = ~np.isnan(values)
    n = len(values)
    num = np.convolve(np.where(valid, values, 0.0), kernel, mode="full")[radius:radius + n]
    den = np.convolve(valid.astype(float), kernel, mode="full")[radius:radius + n]
    return np.divide(num, den, out=np.full_like(values, np.nan, dtype=float), where=den > 1e-12)


def plot_position_curves(curves: dict[str, np.ndarray], out_path: str | Path,
                         title: str = "Loss vs position (held-out tunes)") -> Path:
    """One line per checkpoint: smoothed loss against byte position (paper Figure 8 style)."""
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=110)
    for label, curve in curves.items():
        ax.plot(np.arange(len(curve)), curve, label=label, lw=1.3)
    ax.set_xlabel("position (bytes)")
    ax.set_ylabel("loss (nats/byte)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out_path)
