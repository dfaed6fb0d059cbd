"""Runner `lm_music`: train a byte-level Eagle/Finch LM on ABC tunes, then generate and score tunes.

One stage (paper §10.1): IrishMAN-format data, V=128 byte tokens ([2] + bytes + [3]), the
shared trainer; at the end the model is saved in the official layout, `generate.n_tunes` tunes
are sampled (top-k 8, top-p 0.8 by default) and written as .abc/.mid, and the parse rate
(tunes that music21 reads into a score with at least `generate.min_bars` bars) is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rwkv_mm.backbone import RWKVConfig, SamplingConfig, build_backbone, load_model, save_model
from rwkv_mm.cli_types import MAX_SEED
from rwkv_mm.errors import ConfigError, UserError, check_float, check_int
from rwkv_mm.runners import register_runner
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.trainer import Trainer


@dataclass
class MusicModelConfig:
    """Backbone shape (V is fixed at 128 bytes). Paper: Eagle, L=24, D=512.
    version: "5" (Eagle), "6" (Finch) or "goldfinch"."""

    version: str = "5"
    n_layer: int = 24
    n_embd: int = 512
    head_size: int = 64

    def __post_init__(self) -> None:
        # the backbone's own checks (n_layer >= 1, head_size a multiple of 4 dividing n_embd,
        # GoldFinch's >= 2 layers, ...): its ConfigError names the same field
        RWKVConfig(version=self.version, n_layer=self.n_layer, n_embd=self.n_embd,
                   vocab_size=128, head_size=self.head_size)


@dataclass
class MusicDataConfig:
    """Tunes: IrishMAN JSON files, .abc files or folders of .abc files."""

    train: str = "data/music/train.json"
    validation: str = "data/music/validation.json"
    ctx_len: int = 1024
    max_train_tunes: int = 0  # 0 = all
    max_validation_tunes: int = 0  # 0 = all

    def __post_init__(self) -> None:
        for name in ("train", "validation"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(name, getattr(self, name), "a corpus path (JSON, .abc or folder)")
        check_int(self, "ctx_len", min=2)
        check_int(self, "max_train_tunes", min=0)
        check_int(self, "max_validation_tunes", min=0)


@dataclass
class MusicGenerateConfig:
    """Tunes sampled after training, and how they are scored."""

    n_tunes: int = 20
    prompt: str = ""
    top_k: int = 8
    top_p: float = 0.8
    temperature: float = 1.0
    max_bytes: int = 1024
    min_bars: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self, "n_tunes", min=0)
        check_int(self, "top_k", min=0)  # 0 = off
        check_float(self, "top_p", gt=0.0, max=1.0)  # 1 = off
        check_float(self, "temperature", min=0.0)  # 0 = greedy
        check_int(self, "max_bytes", min=1)
        check_int(self, "min_bars", min=0)
        check_int(self, "seed", min=0, max=MAX_SEED)


@dataclass
class MusicRunConfig:
    model: MusicModelConfig = field(default_factory=MusicModelConfig)
    data: MusicDataConfig = field(default_factory=MusicDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: MusicGenerateConfig = field(default_factory=MusicGenerateConfig)
    init_from: str | None = None  # a .pth/.safetensors backbone (e.g. RWKV-5-ABC-82M) to start from


def build_model(cfg: MusicRunConfig) -> nn.Module:
    """A fresh App. I-initialised model, or the weights of `init_from` (must have V=128)."""
    if cfg.init_from:
        model = load_model(cfg.init_from)
        if model.config.vocab_size != 128:
            raise UserError(f"vocab_size {model.config.vocab_size}, not a byte-level model (V=128)",
                            where=f"init_from={cfg.init_from}",
                            fix="start the music runner from a byte model such as RWKV-5-ABC-82M")
        return model
    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    return build_backbone(RWKVConfig(version=m.version, n_layer=m.n_layer, n_embd=m.n_embd,
                                     vocab_size=128, head_size=m.head_size))


def _limit(items: list, n: int) -> list:
    return items[:n] if n > 0 else items


@register_runner("lm_music", config=MusicRunConfig,
                 description="ABC music LM (byte-level Eagle/Finch), one stage + generation")
def run(cfg: MusicRunConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train, save `model.pth`, generate and score tunes; returns the summary."""
    from rwkv_mm.music.corpus import TuneDataset, collate_tunes, load_tunes
    from rwkv_mm.music.generate import generate_tunes
    from rwkv_mm.music.scoring import parse_rate, write_abc_and_midi

    run_dir = Path(run_dir)
    train_tunes, train_report = load_tunes(cfg.data.train)
    val_tunes, _ = load_tunes(cfg.data.validation)
    train_tunes = _limit(train_tunes, cfg.data.max_train_tunes)
    val_tunes = _limit(val_tunes, cfg.data.max_validation_tunes)
    print(f"data: {len(train_tunes)} training tunes, {len(val_tunes)} validation tunes "
          f"({len(train_report.problems)} skipped with problems)")
    train_set = TuneDataset(train_tunes, cfg.data.ctx_len)
    val_set = TuneDataset(val_tunes, cfg.data.ctx_len)

    model = build_model(cfg)
    trainer = Trainer(model, cfg.train, run_dir, train_set, collate_tunes, eval_set=val_set)
    summary = trainer.fit(resume=resume)
    full_state = trainer.full_model_state_dict() if trainer.sharded else None  # collective
    if trainer.rank != 0:  # under torchrun only the first process saves and generates
        return summary
    if full_state is not None:  # FSDP: rebuild an unsharded copy from the gathered weights
        model = build_model(cfg)
        model.load_state_dict(full_state)
    model_path = save_model(model.cpu().eval(), run_dir / "model.pth")

    g = cfg.generate
    sampling = SamplingConfig(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k)
    tunes_dir = run_dir / "tunes"
    tunes_dir.mkdir(exist_ok=True)
    tunes = generate_tunes(model, g.n_tunes, g.prompt, sampling, g.max_bytes, g.seed)
    for i, text in enumerate(tunes):
        write_abc_and_midi(text, tunes_dir / f"tune_{i:03d}")
    rate = parse_rate(tunes, min_bars=g.min_bars) if tunes else float("nan")
    summary.update({"model": str(model_path), "tunes_dir": str(tunes_dir), "n_tunes": len(tunes),
                    "parse_rate": rate})
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
