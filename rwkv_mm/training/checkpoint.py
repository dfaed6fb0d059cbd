"""Training checkpoints: model, optimizer, step, data position and RNG states, written atomically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from rwkv_mm.backbone import CheckpointError, atomic_write, torch_load


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves a torn file."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer draws from (torch CPU/CUDA, Python's random)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by the trainer (weights_only=True: tensors and plain data).

    A damaged or foreign file is a CheckpointError naming it and saying how to start afresh."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path}")
    fix = "start afresh with --overwrite, or remove the file"
    ckpt = torch_load(path, fix=f"the file is damaged; {fix}")
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"not a training checkpoint (a {type(ckpt).__name__}, not a dict)",
                              where=str(path), fix=fix)
    for key in ("model", "optimizer", "step", "data", "rng"):
        if key not in ckpt:
            raise CheckpointError(f"not a training checkpoint (no '{key}' entry)", where=str(path), fix=fix)
    return ckpt
