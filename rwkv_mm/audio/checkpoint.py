"""Tagger checkpoints (weights + everything needed to tag a file) and weight averaging.

A tagger checkpoint is one `torch.save`d dict:

    {"format": "rwkv_mm.audio_tagger/1", "model_config": {...AudioRWKVConfig...},
     "fbank": {...FbankConfig...}, "stats": {...FeatureStats...}, "target_frames": int,
     "mids": [...], "names": [...], "model": state_dict, "step": int}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from rwkv_mm.training.checkpoint import atomic_torch_save

from .fbank import FbankConfig
from .features import AudioFeatures, FeatureStats
from .model import AudioRWKV, AudioRWKVConfig

FORMAT = "rwkv_mm.audio_tagger/1"


def save_tagger(path: str | Path, model: AudioRWKV, features: AudioFeatures, mids: list[str],
                names: list[str], step: int = 0, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a self-contained tagger checkpoint atomically (`state_dict` defaults to the model's)."""
    sd = state_dict if state_dict is not None else model.state_dict()
    return atomic_torch_save({
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "fbank": dataclasses.asdict(features.cfg),
        "stats": dataclasses.asdict(features.stats),
        "target_frames": features.target_frames,
        "mids": list(mids), "names": list(names),
        "model": {k: v.detach().cpu() for k, v in sd.items()},
        "step": int(step),
    }, Path(path))


def read_tagger_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a tagger checkpoint dict (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not an AudioRWKV tagger checkpoint (format {got!r}, expected {FORMAT!r}); "
                         "the runner writes them as model.pt and checkpoints/step_*.pt")
    return ckpt


def load_tagger(path: str | Path) -> tuple[AudioRWKV, AudioFeatures, dict[str, Any]]:
    """(model in eval mode, its feature extractor, the checkpoint dict) from a tagger checkpoint."""
    ckpt = read_tagger_checkpoint(path)
    model = AudioRWKV(AudioRWKVConfig.from_dict(ckpt["model_config"]), init_weights=False)
    model.load_state_dict(ckpt["model"])
    features = AudioFeatures(FbankConfig(**ckpt["fbank"]), ckpt["target_frames"], FeatureStats(**ckpt["stats"]))
    return model.eval(), features, ckpt


def average_state_dicts(state_dicts: list[dict[str, torch.Tensor]], names: list[str] | None = None
                        ) -> dict[str, torch.Tensor]:
    """Element-wise mean (computed in fp64, stored in each tensor's dtype) of floating-point
    tensors; other tensors are taken from the last dict. Keys and shapes must agree."""
    if not state_dicts:
        raise ValueError("nothing to average: no checkpoints given")
    names = names or [f"#{i}" for i in range(len(state_dicts))]
    first = state_dicts[0]
    for sd, name in zip(state_dicts[1:], names[1:]):
        if set(sd) != set(first):
            diff = sorted(set(sd) ^ set(first))[:5]
            raise ValueError(f"{name}: parameter names differ from {names[0]} (e.g. {diff})")
        for k, v in sd.items():
            if v.shape != first[k].shape:
                raise ValueError(f"{name}: '{k}' has shape {tuple(v.shape)}, {names[0]} has {tuple(first[k].shape)}")
    out = {}
    for k, ref in state_dicts[-1].items():
        if ref.is_floating_point():
            total = sum(sd[k].double() for sd in state_dicts)
            out[k] = (total / len(state_dicts)).to(ref.dtype)
        else:
            out[k] = ref.clone()
    return out


def average_checkpoints(paths: list[str | Path], out: str | Path) -> Path:
    """Average the weights of tagger checkpoints into `out` (metadata from the last one)."""
    if not paths:
        raise ValueError("nothing to average: no checkpoints given")
    ckpts = [read_tagger_checkpoint(p) for p in paths]
    for p, c in zip(paths[1:], ckpts[1:]):
        if c["model_config"] != ckpts[0]["model_config"]:
            raise ValueError(f"{p}: model config differs from {paths[0]}")
    last = dict(ckpts[-1])
    last["model"] = average_state_dicts([c["model"] for c in ckpts], [str(p) for p in paths])
    last["averaged_from"] = [str(p) for p in paths]
    return atomic_torch_save(last, Path(out))


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The runner's weight snapshots `checkpoints/step_*.pt` of a run, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))
