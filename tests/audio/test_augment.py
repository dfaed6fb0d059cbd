"""SpecAugment masks and mixup."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.audio.augment import AugmentConfig, mixup, spec_augment


def _bands(mask_row: torch.Tensor) -> list[tuple[int, int]]:
    """Runs of True in a 1-D bool tensor as (start, width)."""
    runs, start = [], None
    for i, m in enumerate(mask_row.tolist() + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_spec_augment_masks_one_band_each_way_per_clip():
    x = torch.randn(64, 100, 40) + 10  # nothing is 0 before masking
    g = torch.Generator().manual_seed(0)
    out = spec_augment(x, freq_mask=12, time_mask=30, generator=g)
    freq_masked = (out == 0).all(dim=1)  # [B, F]: bins masked at every frame
    time_masked = (out == 0).all(dim=2)  # [B, T]
    widths_f, widths_t = [], []
    for b in range(64):
        bf, bt = _bands(freq_masked[b]), _bands(time_masked[b])
        assert len(bf) <= 1 and len(bt) <= 1  # contiguous (possibly empty) bands
        widths_f += [w for _, w in bf]
        widths_t += [w for _, w in bt]
        keep = ~(freq_masked[b][None, :] | time_masked[b][:, None])
        assert torch.equal(out[b][keep], x[b][keep])  # everything else untouched
    assert max(widths_f) < 12 and max(widths_t) < 30
    assert len(set(widths_t)) > 5  # drawn per clip


def test_spec_augment_off_is_identity():
    x = torch.randn(2, 10, 8)
    assert torch.equal(spec_augment(x, 0, 0), x)


def test_mixup_mixes_inputs_and_labels_with_the_same_lambda():
    torch.manual_seed(0)
    B = 16
    x = torch.arange(B, dtype=torch.float32)[:, None].repeat(1, 5)  # row i = i
    y = torch.eye(B)
    xm, ym = mixup(x, y, prob=1.0, alpha=10.0)
    for i in range(B):
        lam = ym[i, i].item()
        assert 0 < lam < 1 and abs(ym[i].sum().item() - 1) < 1e-6
        j = int(torch.nonzero(ym[i] * (torch.arange(B) != i)).flatten()[0])  # the partner, never itself
        assert j != i and abs(xm[i, 0].item() - (lam * i + (1 - lam) * j)) < 1e-4


def test_mixup_probability_zero_and_single_clip():
    x, y = torch.randn(4, 3), torch.rand(4, 2)
    assert mixup(x, y, 0.0, 10.0)[0] is x
    assert mixup(x[:1], y[:1], 1.0, 10.0)[0] is x[:1] or torch.equal(mixup(x[:1], y[:1], 1.0, 10.0)[0], x[:1])


def test_config_validation():
    with pytest.raises(ValueError, match=r"mixup=1\.5: expected a finite number >= 0\.0 and <= 1\.0"):
        AugmentConfig(mixup=1.5)
    with pytest.raises(ValueError, match="freq_mask=-1"):
        AugmentConfig(freq_mask=-1)
    with pytest.raises(ValueError, match="mixup_alpha=nan"):
        AugmentConfig(mixup_alpha=float("nan"))
    with pytest.raises(ValueError, match="mixup_on='wave'"):
        AugmentConfig(mixup_on="wave")
