"""Multi-label tagging metrics: mAP (sklearn-style average precision per class), ROC AUC, d'.

Written from the definitions (numpy only); tests compare them with scikit-learn.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


def average_precision(scores, labels) -> float:
    """Average precision of one class: Σ_k (R_k − R_{k−1})·P_k over the distinct score
    thresholds k from high to low (tied scores enter together), as sklearn's
    average_precision_score. scores, labels: [n]. NaN when there is no positive."""
    s, y = _as_numpy(scores).astype(np.float64), _as_numpy(labels).astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each threshold
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of one class = P(score of a positive > score of a negative),
    ties counting 1/2 (Mann–Whitney U with mid-ranks). NaN without positives or negatives."""
    s, y = _as_numpy(scores).astype(np.float64), _as_numpy(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # mid-ranks: every member of a tie group gets the mean of the group's 1-based ranks
    starts = np.r_[0, np.nonzero(np.diff(sorted_s))[0] + 1]
    ends = np.r_[starts[1:], len(s)]
    mid = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def d_prime(auc: float) -> float:
    """d' = √2·Φ⁻¹(AUC), as AudioSet papers report it."""
    if not 0.0 < auc < 1.0:
        return float("nan") if math.isnan(auc) else math.copysign(float("inf"), auc - 0.5)
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def tagging_metrics(scores, labels, class_names: list[str] | None = None) -> dict:
    """mAP, mean AUC and d' over the classes of a multi-label evaluation.

    Args:
        scores: [n_clips, C] scores (probabilities or logits: only their order matters).
        labels: [n_clips, C] 0/1 ground truth (values > 0.5 count as positive).
        class_names: optional names for the per-class table.

    Returns a dict: mAP (mean AP over classes with at least one positive), AUC (mean over
    classes with both positives and negatives), d_prime (of that AUC), n_clips,
    n_classes_scored, n_classes_without_positives (excluded from mAP and counted), ap
    (per-class AP list, NaN where excluded) and, with names, worst/best classes.
    """
    s, y = _as_numpy(scores), _as_numpy(labels) > 0.5
    if s.shape != y.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must both be [n_clips, C]")
    C = s.shape[1]
    ap = np.array([average_precision(s[:, c], y[:, c]) for c in range(C)])
    auc = np.array([roc_auc(s[:, c], y[:, c]) for c in range(C)])
    scored = ~np.isnan(ap)
    mean_ap = float(ap[scored].mean()) if scored.any() else float("nan")
    mean_auc = float(np.nanmean(auc)) if (~np.isnan(auc)).any() else float("nan")
    out = {"mAP": mean_ap, "AUC": mean_auc, "d_prime": d_prime(mean_auc), "n_clips": int(s.shape[0]),
           "n_classes_scored": int(scored.sum()), "n_classes_without_positives": int((~scored).sum()),
           "ap": [float(a) for a in ap]}
    if class_names is not None:
        if len(class_names) != C:
            raise ValueError(f"{len(class_names)} class names for {C} classes")
        ranked = sorted((a, n) for a, n in zip(ap, class_names) if not math.isnan(a))
        out["worst_classes"] = [(n, round(float(a), 4)) for a, n in ranked[:5]]
        out["best_classes"] = [(n, round(float(a), 4)) for a, n in ranked[::-1][:5]]
    return out
