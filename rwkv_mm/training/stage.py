"""The shape of every runner, after torchtune's recipe classes: a stage is *set up* from its
config, *fitted* by the shared trainer, and *exported*. A stage class says only what its stage is:

    @register_stage("lm_music", config=MusicRunConfig, outputs=("model.pth", "tunes/tune_*.abc"))
    class MusicStage:
        def __init__(self, cfg: MusicRunConfig, run_dir: Path): ...
        def setup(self) -> Trainer:              # data, model (build_model), the trainer
        def build_model(self) -> nn.Module:      # the stage's model, as set up
        def export(self, model) -> dict:         # rank 0, the whole trained model: save, score
        def on_step(self, trainer, record): ...  # optional: the trainer's per-step hook

`run_stage` is the plumbing, written once: fit (or resume), gather the whole model (under FSDP
a collective on every process, loaded into a fresh `build_model()` on rank 0), export on rank 0
alone, and write the summary atomically to `<run_dir>/summary.json`. With `train.peft` the
adapters are saved to `<run_dir>/adapter/` first and merged into the weights the export gets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from rwkv_mm.backbone import atomic_write

from .distributed import gather_full_model
from .peft_tuning import export_adapters, with_adapters
from .trainer import Trainer

SUMMARY_NAME = "summary.json"


class Stage(Protocol):
    """What `run_stage` drives (see the module docstring). `on_step(trainer, record)` is optional."""

    run_dir: Path

    def setup(self) -> Trainer: ...

    def build_model(self) -> nn.Module: ...

    def export(self, model: nn.Module) -> dict[str, Any]: ...


def run_stage(stage: Stage, resume: bool = False) -> dict[str, Any]:
    """Set up, fit (continuing `checkpoints/last.pt` with `resume`) and export `stage`; returns
    the summary: the trainer's (steps, losses, paths) and what `export` adds (rank 0 only)."""
    trainer = stage.setup()
    summary = trainer.fit(resume=resume, on_step=getattr(stage, "on_step", None))
    model = gather_full_model(trainer, with_adapters(stage.build_model, trainer.cfg))  # collective under FSDP
    if model is None:  # not rank 0: only the first process saves and evaluates
        return summary
    summary.update(export_adapters(model, stage.run_dir))  # train.peft: adapter/ written, then merged in
    summary.update(stage.export(model))
    write_summary(stage.run_dir, summary)
    return summary


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """`summary` as indented JSON in `<run_dir>/summary.json`, atomically (temp file + rename)."""
    text = json.dumps(summary, indent=2, default=str) + "\n"
    return atomic_write(Path(run_dir) / SUMMARY_NAME, lambda tmp: Path(tmp).write_text(text))
