"""Runner `audio_tagging`: train AudioRWKV on AudioSet-style multi-label clips, report mAP.

One supervised stage (paper §11, AST's recipe): waveforms → Kaldi fbank (batched, on the
training device) → normalisation → mixup / SpecAugment (training only) → AudioRWKV → BCE over
the classes. Training clips are drawn with AST's balanced weights. The recipe's `backbone:` is
the encoder's blocks (an RWKVConfig), `model:` the tagger around them (patches, Q-Shift,
pooling). The export scores the model on the eval list (mAP over classes with positives, AUC,
d'), saves it as a self-contained tagger checkpoint (`model.pt`, usable by `rwkv-mm audio tag`),
and — with `eval.average_last` — averages the last snapshots into `model_avg.pt` and scores it.

Outputs in the run folder: model.pt, [model_avg.pt], checkpoints/step_*.pt (snapshots),
map.jsonl, ap.png, data_report.txt (clips left out, by reason); the trainer's and summary.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_mm.audio.augment import AugmentConfig, mixup, spec_augment
from rwkv_mm.audio.config import AudioDataConfig, AudioEvalConfig, AudioFeaturesConfig
from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig, AudioTaggerConfig
from rwkv_mm.backbone import RWKVConfig
from rwkv_mm.errors import ConfigError, UserError
from rwkv_mm.runners import register_stage
from rwkv_mm.training.backbone_section import check_backbone, require_shape
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.distributed import gather_full_model
from rwkv_mm.training.peft_tuning import merged_copy, with_adapters
from rwkv_mm.training.step_logs import append_record
from rwkv_mm.training.trainer import Trainer


@dataclass
class AudioRunConfig:
    """`backbone`: the encoder's blocks (null = those of `init_from`; `vocab_size` unused);
    `model`: the tagger around them; `init_from`: a tagger checkpoint (model.pt) to start from."""

    backbone: RWKVConfig | None = field(default_factory=RWKVConfig)
    model: AudioTaggerConfig = field(default_factory=AudioTaggerConfig)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    features: AudioFeaturesConfig = field(default_factory=AudioFeaturesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(l2wrap=False))
    eval: AudioEvalConfig = field(default_factory=AudioEvalConfig)
    init_from: str | None = None

    def __post_init__(self) -> None:
        """Checks across sections (each section checks its own fields)."""
        require_shape(self.backbone, init_from=self.init_from)
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


def resolve_model_config(cfg: AudioRunConfig, num_classes: int, backbone: RWKVConfig | None = None) -> AudioRWKVConfig:
    """The whole tagger config: `cfg.model` with the sizes fixed by the data and features filled
    in (a recipe that sets them differently is an error naming the key), around `backbone`
    (default: the recipe's)."""
    derived = {"num_classes": num_classes, "num_mel_bins": cfg.features.num_mel_bins,
               "target_frames": cfg.features.target_frames}
    for key, value in derived.items():
        given = getattr(cfg.model, key)
        if given is not None and given != value:
            raise ConfigError(f"model.{key}", given, f"unset (it disagrees with the data/features: {value})")
    try:
        return AudioRWKVConfig.of(cfg.model, backbone or cfg.backbone, **derived)  # checks the patch
    except ConfigError as err:
        raise err.prefixed("model") from None


def build_tagger(cfg: AudioRunConfig, num_classes: int) -> AudioRWKV:
    """A fresh tagger (seeded with `train.seed`), holding `init_from`'s weights when set."""
    from rwkv_mm.audio.checkpoint import load_tagger

    init = load_tagger(cfg.init_from)[0] if cfg.init_from else None
    if init is not None:
        check_backbone(cfg.backbone, init.config.backbone, f"init_from={cfg.init_from}", ignore=("vocab_size",))
    torch.manual_seed(cfg.train.seed)
    model = AudioRWKV(resolve_model_config(cfg, num_classes, init.config.backbone if init else None))
    if init is not None:
        try:
            model.load_state_dict(init.state_dict())
        except RuntimeError as err:  # a different patch grid, class count, ...
            raise UserError(f"the tagger's weights do not fit this recipe's model section "
                            f"({(str(err).splitlines() or [''])[0]})", where=f"init_from={cfg.init_from}",
                            fix="use the model settings it was trained with") from None
    return model


@register_stage("audio_tagging", config=AudioRunConfig,
                description="AudioRWKV audio tagging (AudioSet-style multi-label clips), one stage",
                outputs=("model.pt", "model_avg.pt", "checkpoints/step_*.pt", "map.jsonl", "ap.png",
                         "ap.tmp.png", "data_report.txt"))
class AudioTaggingStage:
    """Train a tagger (snapshots and periodic mAP on the way); export: score, save, average."""

    def __init__(self, cfg: AudioRunConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.start = time.perf_counter()
        self.history: list[tuple[int, float]] = []  # (step, mAP)
        self.map_log = run_dir / "map.jsonl"  # emptied on a fresh start, cut back on resume

    def setup(self) -> Trainer:
        from rwkv_mm.audio.config import load_splits
        from rwkv_mm.audio.datasets import collate_clips
        from rwkv_mm.audio.model import parameter_report
        from rwkv_mm.audio.sampler import BalancedDraws, balanced_weights

        cfg = self.cfg
        self.splits = splits = load_splits(cfg.data, cfg.features)
        print(f"data: {len(splits.train)} training clips, {len(splits.eval)} eval clips, "
              f"{len(splits.classes.names)} classes ({splits.train_problems.n_bad_clips} + "
              f"{splits.eval_problems.n_bad_clips} listed clips left out so far)")
        self.features = cfg.features.build()
        train_set = BalancedDraws(splits.train, balanced_weights(splits.train.targets())) if cfg.data.balanced \
            else splits.train
        self.model = self.build_model()
        self.params = parameter_report(self.model)["total"]
        bb = self.model.config.backbone
        arch = bb.family
        print(f"model: AudioRWKV ({arch}) L={bb.n_layer} D={bb.n_embd}, grid {self.model.patch_embed.grid}, "
              f"{self.params:,} trainable parameters")
        self.trainer = Trainer(self.model, cfg.train, self.run_dir, train_set, collate_clips,
                               eval_set=splits.eval, loss_fn=TaggingLoss(self.features, cfg.augment))
        self.trainer.step_logs.append(self.map_log)
        return self.trainer

    def build_model(self) -> AudioRWKV:
        return build_tagger(self.cfg, len(self.splits.classes.names))

    def on_step(self, trainer: Trainer, _record: dict) -> None:
        """Weight snapshots for averaging (`eval.snapshot_every`) and periodic mAP (`eval.every`)."""
        from rwkv_mm.audio.checkpoint import step_checkpoints

        ev, step = self.cfg.eval, trainer.step
        snapshot = ev.snapshot_every > 0 and step % ev.snapshot_every == 0
        evaluate = ev.every > 0 and step % ev.every == 0 and step < self.cfg.train.max_steps
        if not (snapshot or evaluate):
            return
        model = gather_full_model(trainer, with_adapters(self.build_model, trainer.cfg))  # a collective under FSDP
        if model is None:  # not rank 0
            return
        model = merged_copy(model)  # train.peft: snapshots and scores of the plain (merged) weights
        if snapshot:
            self._save(model, self.run_dir / "checkpoints" / f"step_{step:07d}.pt", step)
            for old in step_checkpoints(self.run_dir)[:-max(ev.keep_snapshots, 1)]:
                old.unlink()
        if evaluate:
            self._evaluate(model, step, ev.max_clips)

    def export(self, model: AudioRWKV) -> dict[str, Any]:
        """Score on the whole eval list, save model.pt, average snapshots, report and plot."""
        from rwkv_mm.audio.plot import plot_tagging

        splits, step = self.splits, self.trainer.step
        metrics = self._evaluate(model, step, 0)
        out = {"mAP": metrics["mAP"], "AUC": metrics["AUC"], "d_prime": metrics["d_prime"],
               "eval_clips": metrics["n_clips"], "classes_scored": metrics["n_classes_scored"],
               "classes_without_positives": metrics["n_classes_without_positives"], "params": self.params,
               "model": str(self._save(model, self.run_dir / "model.pt", step))}
        if self.cfg.eval.average_last > 1:
            out.update(self._average_snapshots(model, step))
        report = "\n".join([splits.train_problems.format("training clips left out"),
                            splits.eval_problems.format("eval clips left out")])
        (self.run_dir / "data_report.txt").write_text(report + "\n")
        print(report)
        plot = plot_tagging(metrics["ap"], splits.classes.names, self.run_dir / "ap.png", self.history,
                            title=f"{self.run_dir.name}: mAP {metrics['mAP']:.3f}")
        out.update({"bad_train_clips": splits.train_problems.n_bad_clips,
                    "bad_eval_clips": splits.eval_problems.n_bad_clips,
                    "train_problems": splits.train_problems.summary(),
                    "eval_problems": splits.eval_problems.summary(),
                    "worst_classes": metrics.get("worst_classes"), "ap_plot": str(plot),
                    "run_s": round(time.perf_counter() - self.start, 1)})
        return out

    # ----------------------------------------------------------------------------- helpers
    def _save(self, model: AudioRWKV, path: Path, step: int) -> Path:
        from rwkv_mm.audio.checkpoint import save_tagger

        classes = self.splits.classes
        return save_tagger(path, model, self.features, classes.mids, classes.names, step)

    def _evaluate(self, model: AudioRWKV, step: int, max_clips: int) -> dict:
        """mAP etc. on the eval list (its first `max_clips`; 0 = all), logged to map.jsonl."""
        from rwkv_mm.audio.evaluate import evaluate_tagger

        m = evaluate_tagger(model, self.features, self.splits.eval, self.splits.classes.names,
                            self.cfg.eval.batch_size, max_clips)
        self.history.append((step, m["mAP"]))
        append_record(self.map_log, {"step": step, "mAP": m["mAP"], "AUC": m["AUC"], "n_clips": m["n_clips"]})
        print(f"step {step}: mAP {m['mAP']:.4f}  AUC {m['AUC']:.4f}  ({m['n_clips']} clips)")
        return m

    def _average_snapshots(self, model: AudioRWKV, step: int) -> dict[str, Any]:
        """Score the average of the last `eval.average_last` snapshots; save it as model_avg.pt."""
        from rwkv_mm.audio.checkpoint import average_state_dicts, read_tagger_checkpoint, step_checkpoints
        from rwkv_mm.audio.evaluate import evaluate_tagger

        k = self.cfg.eval.average_last
        snaps = step_checkpoints(self.run_dir)[-k:]
        if len(snaps) < 2:
            print(f"eval.average_last={k}: only {len(snaps)} snapshot(s) (set eval.snapshot_every); no average")
            return {}
        final_state = {name: v.detach().clone() for name, v in model.state_dict().items()}
        model.load_state_dict(average_state_dicts([read_tagger_checkpoint(p)["model"] for p in snaps],
                                                  [str(p) for p in snaps]))
        avg = evaluate_tagger(model, self.features, self.splits.eval, self.splits.classes.names,
                              self.cfg.eval.batch_size)
        saved = self._save(model, self.run_dir / "model_avg.pt", step)
        model.load_state_dict(final_state)
        print(f"average of the last {len(snaps)} snapshots: mAP {avg['mAP']:.4f}  AUC {avg['AUC']:.4f}")
        return {"mAP_averaged": avg["mAP"], "AUC_averaged": avg["AUC"], "averaged_snapshots": len(snaps),
                "model_averaged": str(saved)}


run = AudioTaggingStage.run  # the registered runner function: run(cfg, run_dir, resume=False) -> summary
