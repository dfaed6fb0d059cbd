"""Per-position loss (Figure 8) against a one-sequence-at-a-time computation; smoothing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rwkv_mm.music.positions import gaussian_smooth, per_position_loss, plot_position_curves
from rwkv_test_utils import tiny_model


def test_per_position_loss_matches_unbatched_computation():
    model = tiny_model(version="5", n_layer=1, n_embd=32, head_size=16, vocab_size=128)
    g = torch.Generator().manual_seed(0)
    seqs = [[2] + torch.randint(4, 128, (n,), generator=g).tolist() + [3] for n in (5, 12, 30, 3)]
    mean, count = per_position_loss(model, seqs, max_len=20, batch_size=3)
    total, n = np.zeros(20), np.zeros(20)
    for s in seqs:
        s = s[:21]
        with torch.no_grad():
            logits, _ = model(torch.tensor([s[:-1]]))
        loss = F.cross_entropy(logits[0], torch.tensor(s[1:]), reduction="none").numpy()
        total[: len(loss)] += loss
        n[: len(loss)] += 1
    assert np.array_equal(count, n)
    assert np.allclose(mean, total / n, atol=1e-5)


def test_gaussian_smoothing():
    flat = np.full(50, 2.0)
    assert np.allclose(gaussian_smooth(flat, 3.0), 2.0)  # edges renormalised
    impulse = np.zeros(41)
    impulse[20] = 1.0
    smooth = gaussian_smooth(impulse, 2.0)
    assert smooth.argmax() == 20 and np.isclose(smooth[18], smooth[22])
    with_nan = np.array([1.0, np.nan, 3.0])
    assert np.isfinite(gaussian_smooth(with_nan, 1.0)).all()


def test_plot_writes_png(tmp_path):
    out = plot_position_curves({"a": np.linspace(3, 1, 100), "b": np.linspace(2.5, 1.2, 100)},
                               tmp_path / "fig.png")
    assert out.stat().st_size > 1000
