"""Tagging audio files with a trained AudioRWKV: scores per class, top-k labels."""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_mm.errors import UserError

from .features import AudioFeatures
from .io import load_audio
from .model import AudioRWKV


def windows(wave: torch.Tensor, size: int) -> torch.Tensor:
    """Cut [L] into consecutive windows of `size` samples, the last zero-padded: [n, size].
    A clip shorter than one window gives one padded window."""
    n = max(1, -(-wave.shape[0] // size))
    padded = torch.nn.functional.pad(wave, (0, n * size - wave.shape[0]))
    return padded.view(n, size)


@torch.no_grad()
def tag_waveform(model: AudioRWKV, features: AudioFeatures, wave: torch.Tensor,
                 batch_size: int = 8) -> torch.Tensor:
    """Class probabilities [C] of a mono waveform [L] at the features' sample rate.

    The waveform is cut into windows of the training length (`features.target_frames` frames);
    a class's score is its highest probability over the windows."""
    device = next(model.parameters()).device
    size = features.cfg.num_samples(features.target_frames)
    chunks = windows(wave, size)  # [n, size]
    probs = []
    for start in range(0, chunks.shape[0], batch_size):
        x = features.to(device)(chunks[start:start + batch_size].to(device))  # [b, T, M]
        probs.append(torch.sigmoid(model(x).float()))
    return torch.cat(probs).amax(0).cpu()


def top_labels(probs: torch.Tensor, names: list[str], mids: list[str], k: int = 5) -> list[tuple[str, str, float]]:
    """The k best (name, mid, probability), best first (k >= 1; all classes when k is larger)."""
    if k < 1:
        raise ValueError(f"top_labels: k={k}, expected >= 1")
    values, idx = probs.topk(min(k, probs.numel()))
    return [(names[i], mids[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def tag_file(path: str | Path, model: AudioRWKV, features: AudioFeatures, names: list[str],
             mids: list[str], k: int = 5) -> list[tuple[str, str, float]]:
    """Top-k labels of an audio file (any sample rate and channel count).

    Raises AudioLoadError naming the file when it is unreadable, holds NaN/Inf samples or is
    shorter than one fbank window; UserError when the tagger's scores are not finite."""
    wave = load_audio(path, features.cfg.sample_rate, min_samples=features.cfg.window_size)
    probs = tag_waveform(model, features, wave)  # [C]
    if not bool(torch.isfinite(probs).all()):
        raise UserError("the tagger gave non-finite scores", where=str(path),
                        fix="check the clip's sample values (huge amplitudes overflow the fbank) "
                            "and that the checkpoint's weights are finite")
    return top_labels(probs, names, mids, k)
