"""Scoring an evaluation list with a tagger: class probabilities and labels for every good clip."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from rwkv_mm.errors import UserError

from .datasets import AudioTaggingDataset, collate_clips
from .features import AudioFeatures
from .metrics import tagging_metrics


@torch.no_grad()
def score_dataset(model: nn.Module, features: AudioFeatures, dataset: AudioTaggingDataset,
                  batch_size: int = 32, max_clips: int = 0,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities [n, C] and targets [n, C] of the dataset's good clips (bad ones are skipped
    and counted in `dataset.problems`). `max_clips` > 0 scores only the first clips."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats = features.to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    n = len(dataset) if max_clips <= 0 else min(max_clips, len(dataset))
    scores, labels, pending = [], [], []

    def flush() -> None:
        batch = collate_clips(pending)
        with autocast:
            logits = model(feats(batch["wave"].to(device)))
        scores.append(torch.sigmoid(logits.float()).cpu())
        labels.append(batch["targets"])
        pending.clear()

    for i in range(n):
        sample = dataset.load(i)
        if sample is not None:
            pending.append(sample)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    model.train(was_training)
    if not scores:
        raise UserError(f"no readable evaluation clip among the first {n}\n{dataset.problems.format()}",
                        fix="check the eval list and its clips (the report above names the bad ones)")
    return torch.cat(scores), torch.cat(labels)


def evaluate_tagger(model: nn.Module, features: AudioFeatures, dataset: AudioTaggingDataset,
                    class_names: list[str] | None = None, batch_size: int = 32, max_clips: int = 0) -> dict:
    """`tagging_metrics` (mAP, AUC, d', per-class AP, ...) of the model on the dataset."""
    scores, labels = score_dataset(model, features, dataset, batch_size, max_clips)
    return tagging_metrics(scores, labels, class_names)
