"""Runner `lm_music`: train a byte-level Eagle/Finch LM on ABC tunes, then generate and score tunes.

One stage (paper §10.1): IrishMAN-format data, V=128 byte tokens ([2] + bytes + [3]), the
shared trainer; the export saves the model in the official layout (`model.pth`; a state-tuned
run's learned initial state is in it and alone in `state.pth`), samples
`generate.n_tunes` tunes (top-k 8, top-p 0.8 by default) written as .abc/.mid, and reports the
parse rate (tunes that music21 reads into a score with at least `generate.min_bars` bars).
The model is the recipe's `backbone:` section (an `RWKVConfig`, `vocab_size: 128`), fresh or
loaded from `init_from`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from rwkv_mm.backbone import RWKVConfig, SamplingConfig, save_model
from rwkv_mm.cli_types import MAX_SEED
from rwkv_mm.errors import ConfigError, UserError, check_float, check_int
from rwkv_mm.runners import register_stage
from rwkv_mm.shipped import resolve_shipped
from rwkv_mm.training.backbone_section import backbone_from, require_shape
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.segments import check_max_len, sample_len
from rwkv_mm.training.state_tuning import STATE_FILE, write_state_file
from rwkv_mm.training.trainer import Trainer

#: byte tokens: the music runner's fixed vocabulary (`backbone.vocab_size`)
BYTE_VOCAB = 128


@dataclass
class MusicDataConfig:
    """Tunes: IrishMAN JSON files, .abc files or folders of .abc files (`pkg:` = shipped).
    `max_len`: with `train.segment_len`, the longest sample (0/null: `ctx_len`)."""

    train: str = "pkg:data/music/train.json"
    validation: str = "pkg:data/music/validation.json"
    ctx_len: int = 1024
    max_len: int | None = None
    max_train_tunes: int = 0  # 0 = all
    max_validation_tunes: int = 0  # 0 = all

    def __post_init__(self) -> None:
        for name in ("train", "validation"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(name, getattr(self, name), "a corpus path (JSON, .abc or folder)")
        check_int(self, "ctx_len", min=2)
        check_int(self, "max_len", min=0, optional=True)
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
    """`backbone`: the LM (null = the shape of `init_from`); `init_from`: a .pth/.safetensors
    backbone to start from (e.g. RWKV-5-ABC-82M)."""

    backbone: RWKVConfig | None = field(default_factory=lambda: RWKVConfig(vocab_size=BYTE_VOCAB))
    init_from: str | None = None
    data: MusicDataConfig = field(default_factory=MusicDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: MusicGenerateConfig = field(default_factory=MusicGenerateConfig)

    def __post_init__(self) -> None:
        require_shape(self.backbone, init_from=self.init_from)
        check_max_len(self.data.max_len, self.train.segment_len)
        if self.backbone is not None and self.backbone.vocab_size != BYTE_VOCAB:
            raise ConfigError("backbone.vocab_size", self.backbone.vocab_size,
                              f"{BYTE_VOCAB}: the music runner's tokens are bytes")


def build_model(cfg: MusicRunConfig) -> nn.Module:
    """A fresh App. I-initialised model of `cfg.backbone`, or the weights of `init_from`
    (which must be a byte-level model, V=128)."""
    model = backbone_from(cfg.backbone, cfg.init_from, cfg.train.seed)
    if model.config.vocab_size != BYTE_VOCAB:  # backbone: null, and the file is not a byte model
        raise UserError(f"vocab_size {model.config.vocab_size}, not a byte-level model (V={BYTE_VOCAB})",
                        where=f"init_from={cfg.init_from}",
                        fix="start the music runner from a byte model such as RWKV-5-ABC-82M")
    return model


def _limit(items: list, n: int) -> list:
    return items[:n] if n > 0 else items


@register_stage("lm_music", config=MusicRunConfig,
                description="ABC music LM (byte-level Eagle/Finch), one stage + generation",
                outputs=("model.pth", "state.pth", "tunes/tune_*.abc", "tunes/tune_*.mid"))
class MusicStage:
    """Train on tunes; export `model.pth` and generated, scored tunes."""

    def __init__(self, cfg: MusicRunConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir

    def setup(self) -> Trainer:
        from rwkv_mm.music.corpus import TuneDataset, collate_tunes, load_tunes

        d = self.cfg.data
        train_tunes, train_report = load_tunes(resolve_shipped(d.train))
        val_tunes, _ = load_tunes(resolve_shipped(d.validation))
        train_tunes, val_tunes = _limit(train_tunes, d.max_train_tunes), _limit(val_tunes, d.max_validation_tunes)
        print(f"data: {len(train_tunes)} training tunes, {len(val_tunes)} validation tunes "
              f"({len(train_report.problems)} skipped with problems)")
        length = sample_len(d.ctx_len, d.max_len, self.cfg.train.segment_len)
        return Trainer(self.build_model(), self.cfg.train, self.run_dir, TuneDataset(train_tunes, length),
                       collate_tunes, eval_set=TuneDataset(val_tunes, length))

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def export(self, model: nn.Module) -> dict[str, Any]:
        """Save the model, generate `generate.n_tunes` tunes (.abc + .mid) and score them."""
        from rwkv_mm.music.generate import generate_tunes
        from rwkv_mm.music.scoring import parse_rate, write_abc_and_midi

        model = model.cpu().eval()
        model_path = save_model(model, self.run_dir / "model.pth")
        state = write_state_file(model, self.run_dir / STATE_FILE)  # state tuning: the state alone too
        g = self.cfg.generate
        sampling = SamplingConfig(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k)
        tunes_dir = self.run_dir / "tunes"
        tunes_dir.mkdir(exist_ok=True)
        tunes = generate_tunes(model, g.n_tunes, g.prompt, sampling, g.max_bytes, g.seed)
        for i, text in enumerate(tunes):
            write_abc_and_midi(text, tunes_dir / f"tune_{i:03d}")
        rate = parse_rate(tunes, min_bars=g.min_bars) if tunes else float("nan")
        return {"model": str(model_path), **state, "tunes_dir": str(tunes_dir), "n_tunes": len(tunes),
                "parse_rate": rate}


run = MusicStage.run  # the registered runner function: run(cfg, run_dir, resume=False) -> summary
