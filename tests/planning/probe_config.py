"""A minimal run config for planning a bare language model in tests (no runner owns it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rwkv_mm.backbone import RWKVConfig
from rwkv_mm.training.config import TrainConfig


@dataclass
class ProbeData:
    ctx_len: int = 256


@dataclass
class ProbeRunConfig:
    """What `rwkv_mm.planning.models.plan_model` needs of an LM recipe: backbone, data.ctx_len,
    train (fp32, no L2Wrap: the probe's loss is a plain cross entropy)."""

    backbone: RWKVConfig
    data: ProbeData = field(default_factory=ProbeData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(l2wrap=False, precision="fp32"))


def probe_config(version: str, n_layer: int, n_embd: int, vocab_size: int, seq_len: int,
                 **train) -> ProbeRunConfig:
    return ProbeRunConfig(RWKVConfig(version=version, n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size,
                                     head_size=64), ProbeData(seq_len),
                          TrainConfig(**{"l2wrap": False, "precision": "fp32", **train}))
