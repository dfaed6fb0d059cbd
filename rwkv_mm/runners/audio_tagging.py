"""Runner `audio_tagging`: train AudioRWKV on AudioSet-style multi-label clips, report mAP.

One supervised stage (paper §11, AST's recipe): waveforms → Kaldi fbank (batched, on the
training device) → normalisation → mixup / SpecAugment (training only) → AudioRWKV → BCE over
the classes. Training clips are drawn with AST's balanced weights. At the end the model is
scored on the eval list (mAP over classes with positives, AUC, d'), saved as a self-contained
tagger checkpoint (`model.pt`, usable by `rwkv-mm audio tag`), and — with
`eval.average_last` — the last snapshots are averaged into `model_avg.pt` and scored too.

Outputs in the run folder: model.pt, [model_avg.pt], checkpoints/last.pt (resume),
checkpoints/step_*.pt (snapshots), metrics.jsonl + loss.png (trainer), map.jsonl, ap.png,
data_report.txt (clips left out, by reason), summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_mm.audio.augment import AugmentConfig, mixup, spec_augment
from rwkv_mm.audio.config import AudioDataConfig, AudioEvalConfig, AudioFeaturesConfig
from rwkv_mm.audio.model import AudioRWKVConfig
from rwkv_mm.errors import ConfigError
from rwkv_mm.runners import register_runner
from rwkv_mm.training.config import TrainConfig


@dataclass
class AudioRunConfig:
    model: AudioRWKVConfig = field(default_factory=AudioRWKVConfig)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    features: AudioFeaturesConfig = field(default_factory=AudioFeaturesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(l2wrap=False))
    eval: AudioEvalConfig = field(default_factory=AudioEvalConfig)
    init_from: str | None = None  # a tagger checkpoint (model.pt) to start from

    def __post_init__(self) -> None:
        """Checks across sections (each section checks its own fields)."""
        patch, frames, mels = self.model.patch, self.features.target_frames, self.features.num_mel_bins
        if frames < patch[0] or mels < patch[1]:
            raise ConfigError("model.patch", list(patch), f"at most the input (features.target_frames={frames}, "
                                                          f"features.num_mel_bins={mels})")


class TaggingLoss:
    """The trainer's loss_fn: features, augmentation (when the model is in training mode) and
    BCE summed over clips × classes (the trainer divides by the number of targets)."""

    def __init__(self, features: nn.Module, augment: AugmentConfig) -> None:
        self.features = features
        self.augment = augment

    def __call__(self, model: nn.Module, batch: dict[str, Any]):
        wave, y = batch["wave"], batch["targets"].float()  # [B, L], [B, C]
        aug = self.augment
        self.features = self.features.to(wave.device)  # buffers only; a no-op after the first call
        if model.training and aug.mixup > 0 and aug.mixup_on == "waveform":
            wave, y = mixup(wave, y, aug.mixup, aug.mixup_alpha)
        x = self.features(wave)  # [B, T, M]
        if model.training:
            if aug.mixup > 0 and aug.mixup_on == "fbank":
                x, y = mixup(x, y, aug.mixup, aug.mixup_alpha)
            x = spec_augment(x, aug.freq_mask, aug.time_mask, aug.n_freq_masks, aug.n_time_masks)
        logits = model(x)  # [B, C]
        loss = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum")
        return loss, torch.tensor(y.numel(), device=y.device), None


def resolve_model_config(cfg: AudioRunConfig, num_classes: int) -> AudioRWKVConfig:
    """The model section with the sizes fixed by the data and features filled in (a recipe that
    sets them differently is an error naming the key)."""
    derived = {"num_classes": num_classes, "num_mel_bins": cfg.features.num_mel_bins,
               "target_frames": cfg.features.target_frames}
    for key, value in derived.items():
        given = getattr(cfg.model, key)
        if given is not None and given != value:
            raise ConfigError(f"model.{key}", given, f"unset (it disagrees with the data/features: {value})")
    try:
        return dataclasses.replace(cfg.model, **derived)  # checks the patch against the input size
    except ConfigError as err:
        raise err.prefixed("model") from None


def _snapshot_hook(cfg: AudioRunConfig, run_dir: Path, save: callable, evaluate: callable):
    """on_step callback: weight snapshots for averaging and periodic mAP."""
    ev = cfg.eval

    def on_step(trainer, _record) -> None:
        step = trainer.step
        if ev.snapshot_every > 0 and step % ev.snapshot_every == 0 and trainer.rank == 0:
            save(run_dir / "checkpoints" / f"step_{step:07d}.pt", step)
            from rwkv_mm.audio.checkpoint import step_checkpoints
            for old in step_checkpoints(run_dir)[:-max(ev.keep_snapshots, 1)]:
                old.unlink()
        if ev.every > 0 and step % ev.every == 0 and step < cfg.train.max_steps and trainer.rank == 0:
            evaluate(step, ev.max_clips)

    return on_step


@register_runner("audio_tagging", config=AudioRunConfig,
                 description="AudioRWKV audio tagging (AudioSet-style multi-label clips), one stage")
def run(cfg: AudioRunConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train, evaluate, save `model.pt` (and `model_avg.pt`); returns the summary."""
    from rwkv_mm.audio.checkpoint import average_state_dicts, load_tagger, save_tagger, step_checkpoints
    from rwkv_mm.audio.config import load_splits
    from rwkv_mm.audio.datasets import collate_clips
    from rwkv_mm.audio.evaluate import evaluate_tagger
    from rwkv_mm.audio.model import AudioRWKV, parameter_report
    from rwkv_mm.audio.plot import plot_tagging
    from rwkv_mm.audio.sampler import BalancedDraws, balanced_weights
    from rwkv_mm.training.trainer import Trainer

    start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg.data, cfg.features)
    names, mids = splits.classes.names, splits.classes.mids
    print(f"data: {len(splits.train)} training clips, {len(splits.eval)} eval clips, {len(names)} classes "
          f"({splits.train_problems.n_bad_clips} + {splits.eval_problems.n_bad_clips} listed clips left out so far)")
    features = cfg.features.build()
    train_set = splits.train
    if cfg.data.balanced:
        train_set = BalancedDraws(splits.train, balanced_weights(splits.train.targets()))

    torch.manual_seed(cfg.train.seed)
    model_cfg = resolve_model_config(cfg, len(names))
    model = AudioRWKV(model_cfg)
    if cfg.init_from:
        init_model, _, _ = load_tagger(cfg.init_from)
        model.load_state_dict(init_model.state_dict())
    params = parameter_report(model)
    arch = {"5": "Eagle", "6": "Finch", "goldfinch": "GoldFinch"}[model_cfg.backbone_config().version]
    print(f"model: AudioRWKV ({arch}) L={model_cfg.n_layer} "
          f"D={model_cfg.n_embd}, grid {model.patch_embed.grid}, {params['total']:,} trainable parameters")

    def save(path: Path, step: int, state_dict=None) -> Path:
        return save_tagger(path, model, features, mids, names, step, state_dict)

    history: list[tuple[int, float]] = []
    map_log = run_dir / "map.jsonl"  # emptied on a fresh start, cut back on resume: trainer.step_logs

    def evaluate(step: int, max_clips: int) -> dict:
        metrics = evaluate_tagger(model, features, splits.eval, names, cfg.eval.batch_size, max_clips)
        history.append((step, metrics["mAP"]))
        with open(map_log, "a") as f:
            f.write(json.dumps({"step": step, "mAP": metrics["mAP"], "AUC": metrics["AUC"],
                                "n_clips": metrics["n_clips"]}) + "\n")
        print(f"step {step}: mAP {metrics['mAP']:.4f}  AUC {metrics['AUC']:.4f}  ({metrics['n_clips']} clips)")
        return metrics

    trainer = Trainer(model, cfg.train, run_dir, train_set, collate_clips, eval_set=splits.eval,
                      loss_fn=TaggingLoss(features, cfg.augment))
    trainer.step_logs.append(map_log)
    summary = trainer.fit(resume=resume, on_step=_snapshot_hook(cfg, run_dir, save, evaluate))
    full_state = trainer.full_model_state_dict() if trainer.sharded else None  # collective
    if trainer.rank != 0:
        return summary
    if full_state is not None:
        model.load_state_dict(full_state)

    metrics = evaluate(trainer.step, 0)
    model_path = save(run_dir / "model.pt", trainer.step)
    summary.update({"mAP": metrics["mAP"], "AUC": metrics["AUC"], "d_prime": metrics["d_prime"],
                    "eval_clips": metrics["n_clips"], "classes_scored": metrics["n_classes_scored"],
                    "classes_without_positives": metrics["n_classes_without_positives"],
                    "params": params["total"], "model": str(model_path)})
    if cfg.eval.average_last > 1:
        snaps = step_checkpoints(run_dir)[-cfg.eval.average_last:]
        if len(snaps) >= 2:
            sds = [torch.load(p, map_location="cpu", weights_only=True)["model"] for p in snaps]
            final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(average_state_dicts(sds, [str(p) for p in snaps]))
            avg = evaluate_tagger(model, features, splits.eval, names, cfg.eval.batch_size)
            summary.update({"mAP_averaged": avg["mAP"], "AUC_averaged": avg["AUC"], "averaged_snapshots": len(snaps),
                            "model_averaged": str(save(run_dir / "model_avg.pt", trainer.step))})
            model.load_state_dict(final_state)
            print(f"average of the last {len(snaps)} snapshots: mAP {avg['mAP']:.4f}  AUC {avg['AUC']:.4f}")
        else:
            print(f"eval.average_last={cfg.eval.average_last}: only {len(snaps)} snapshot(s) "
                  "(set eval.snapshot_every); no average")

    report = "\n".join([splits.train_problems.format("training clips left out"),
                        splits.eval_problems.format("eval clips left out")])
    (run_dir / "data_report.txt").write_text(report + "\n")
    print(report)
    plot = plot_tagging(metrics["ap"], names, run_dir / "ap.png", history,
                        title=f"{run_dir.name}: mAP {metrics['mAP']:.3f}")
    summary.update({"bad_train_clips": splits.train_problems.n_bad_clips,
                    "bad_eval_clips": splits.eval_problems.n_bad_clips,
                    "train_problems": splits.train_problems.summary(),
                    "eval_problems": splits.eval_problems.summary(),
                    "worst_classes": metrics.get("worst_classes"), "ap_plot": str(plot),
                    "run_s": round(time.perf_counter() - start, 1)})
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
