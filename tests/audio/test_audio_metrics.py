"""mAP and AUC against scikit-learn (the peer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from rwkv_mm.audio.metrics import average_precision, d_prime, roc_auc, tagging_metrics


@pytest.mark.parametrize("seed", range(5))
def test_per_class_ap_and_auc_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(2, 80))
        y = rng.random(n) < rng.uniform(0.05, 0.9)
        s = np.round(rng.random(n) + y * rng.uniform(0, 0.5), int(rng.integers(1, 4)))  # many ties
        if y.any():
            assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        if 0 < y.sum() < n:
            assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_tagging_metrics_macro_average_excludes_and_counts_classes_without_positives():
    rng = np.random.default_rng(0)
    y = rng.random((200, 6)) < 0.3
    y[:, 4] = False  # no positive: excluded from mAP and AUC, counted
    y[:, 5] = True  # no negative: AP = 1 (sklearn), excluded from AUC
    s = rng.random((200, 6)) + y * 0.4
    m = tagging_metrics(s, y, [f"c{i}" for i in range(6)])
    keep = [0, 1, 2, 3, 5]
    assert m["mAP"] == pytest.approx(np.mean([average_precision_score(y[:, c], s[:, c]) for c in keep]))
    assert m["AUC"] == pytest.approx(np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(4)]))
    assert m["n_classes_scored"] == 5 and m["n_classes_without_positives"] == 1
    assert math.isnan(m["ap"][4]) and m["n_clips"] == 200
    assert len(m["worst_classes"]) == 5


def test_d_prime_and_shape_errors():
    assert d_prime(0.5) == pytest.approx(0.0)
    assert d_prime(0.9) == pytest.approx(math.sqrt(2) * 1.2815515655446004)
    with pytest.raises(ValueError, match="n_clips, C"):
        tagging_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
