"""Tagger checkpoints (weights + everything needed to tag a file) and weight averaging.

A tagger checkpoint is one `torch.save`d dict:

    {"format": "rwkv_mm.audio_tagger/1", "model_config": {...AudioRWKVConfig...},
     "fbank": {...FbankConfig...}, "stats": {...FeatureStats...}, "target_frames": int,
     "mids": [...], "names": [...], "model": state_dict, "step": int}

`model_config` is `AudioRWKVConfig.to_dict()`: the tagger's settings and a `backbone` section
(an RWKVConfig). Files written before the backbone had its own section hold one flat dict
(`n_layer`, `n_embd`, ... beside `patch`); `AudioRWKVConfig.from_dict` reads both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from rwkv_mm.backbone import CheckpointError, check_state_dict, check_weights, layer_count, torch_load
from rwkv_mm.errors import UserError
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
    """Load and check a tagger checkpoint dict (on the CPU, tensors and plain data only).

    A file torch cannot read (truncated, empty, not a torch file, or holding objects the safe
    loader refuses) or that is not a tagger checkpoint is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch_load(path, fix="the file is truncated or not a checkpoint; use the run's model.pt")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"not an AudioRWKV tagger checkpoint (format {got!r}, expected {FORMAT!r})",
                              where=str(path), fix="the runner writes them as model.pt and checkpoints/step_*.pt")
    missing = [k for k in ("model_config", "fbank", "stats", "target_frames", "mids", "names", "model") if k not in ckpt]
    if missing:
        raise CheckpointError(f"tagger checkpoint without {missing}", where=str(path))
    sd = ckpt["model"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError("tagger checkpoint whose 'model' entry is not a dict of tensors", where=str(path))
    return ckpt


def load_tagger(path: str | Path) -> tuple[AudioRWKV, AudioFeatures, dict[str, Any]]:
    """(model in eval mode, its feature extractor, the checkpoint dict) from a tagger checkpoint.

    The saved config is checked against the weights' keys and shapes on a meta-device model, and
    the weights for dtype and NaN/Inf, before a model of the config's size is allocated."""
    ckpt = read_tagger_checkpoint(path)
    source, sd = str(path), ckpt["model"]
    n_layer = layer_count(sd, source)  # blocks 0..L-1, each with keys
    try:
        config = AudioRWKVConfig.from_dict(ckpt["model_config"])
        if config.backbone.n_layer != n_layer:  # checked before a model of the config's size is built
            raise CheckpointError(f"model_config.backbone.n_layer={config.backbone.n_layer}, the weights "
                                  f"hold {n_layer} layers")
        features = AudioFeatures(FbankConfig(**ckpt["fbank"]), ckpt["target_frames"],
                                 FeatureStats(**ckpt["stats"]))
        with torch.device("meta"):
            shapes = AudioRWKV(config, init_weights=False)
    except (ValueError, TypeError, AttributeError) as err:  # bad config values (UserError), wrong types
        reason = (str(err).splitlines() or [""])[0]
        raise CheckpointError(f"inconsistent tagger checkpoint ({reason})", where=source) from None
    check_state_dict(shapes, sd, source)
    check_weights(sd, source)
    mids, names = ckpt["mids"], ckpt["names"]
    if not (isinstance(mids, list) and isinstance(names, list) and len(mids) == len(names) == config.num_classes):
        raise CheckpointError(f"inconsistent tagger checkpoint (mids and names must be lists of "
                              f"{config.num_classes} labels, one per class)", where=source)
    model = AudioRWKV(config, init_weights=False)
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:  # a shape that differs only in dims of size 1
        raise CheckpointError(f"inconsistent tagger checkpoint ({(str(err).splitlines() or [''])[0]})",
                              where=source) from None
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
            raise UserError(f"parameter names differ from {names[0]} (e.g. {diff})", where=name)
        for k, v in sd.items():
            if v.shape != first[k].shape:
                raise UserError(f"'{k}' has shape {tuple(v.shape)}, {names[0]} has {tuple(first[k].shape)}",
                                where=name)
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
            raise UserError(f"model config differs from {paths[0]}", where=str(p))
    last = dict(ckpts[-1])
    last["model"] = average_state_dicts([c["model"] for c in ckpts], [str(p) for p in paths])
    last["averaged_from"] = [str(p) for p in paths]
    return atomic_torch_save(last, Path(out))


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The runner's weight snapshots `checkpoints/step_*.pt` of a run, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))
