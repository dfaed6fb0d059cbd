"""AudioRWKV: patch embedding + bidirectional Q-Shift backbone blocks + mean-pooled head.

fbank [B, T, M] → PatchEmbed → LN0 → L blocks → LN_out → pool over patches → Linear → logits [B, C]

The blocks are the backbone's, asked for as an encoder (`RWKVEncoder.add_blocks`): the family of
`version` (Eagle, Finch or GoldFinch) made bidirectional, every lerp fed by Q-Shift over the
patch grid instead of the previous token. With `version: goldfinch` the backbone also keeps the
key cache, written from x0 = LN0(patch embeddings) in place of token embeddings. Parameter names
are the backbone's (`blocks.i.att.*`, `blocks.i.ffn.*`; GoldFinch: `w_kv_cache_a`/`_b`).

Pooling is the mean over patches (the paper's head) by default; `pool: max` or `mean+max`
(PANNs' choice) are options — short, sparse events train much faster with them (the tiny
synthetic recipe: mAP 0.58 with mean vs 0.80 with max after 200 steps).

Sizes (trainable parameters of this module; the Kaldi fbank has none):

| config | D | L | F | heads | trainable (527 classes, 1024×128 input, 16×16 patches) |
|---|---|---|---|---|---|
| AudioRWKV-T (Finch) | 192 | 12 | 4D | 3×64 | 7,512,335 (8,595,791 with a frozen STFT front end) |
| AudioRWKV-S (Finch) | 384 | 12 | 4D | 6×64 | 27,410,447 (28,493,903 with a frozen STFT front end) |
| Eagle, same shapes   | 192 / 384 | 12 | 4D | | 6,475,535 / 25,336,847 |

The paper reports 8.7M and 28.4M. Its numbers appear to include a frozen STFT + log-mel front
end of the HTS-AT/torchlibrosa kind, whose convolution weights are module parameters:
2 × 513 × 1024 (real/imaginary STFT kernels, n_fft 1024) + 513 × 64 (mel matrix) = 1,083,456.
`parameter_report` gives the breakdown; `STFT_FRONT_END_PARAMS` is that constant. F = 4D is
Vision-RWKV's channel-mix ratio (the LM backbone uses 3.5D).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from rwkv_mm.backbone import RWKVConfig, RWKVEncoder, config_from_dict, config_to_dict
from rwkv_mm.errors import ConfigError, UserError, check_choice, check_float, check_int

from .encoder import PatchEmbed, q_shift

#: parameters of a torchlibrosa-style frozen STFT (n_fft 1024: 513 bins, real + imaginary
#: conv kernels of length 1024) and its 513 × 64 mel matrix, as HTS-AT-based models count them
STFT_FRONT_END_PARAMS = 2 * 513 * 1024 + 513 * 64

#: named sizes: backbone fields (F = 4·D, Vision-RWKV's ratio); everything else keeps its default
PRESETS: dict[str, dict[str, Any]] = {
    "T": {"version": "6", "n_layer": 12, "n_embd": 192, "head_size": 64, "dim_ffn": 4 * 192},
    "S": {"version": "6", "n_layer": 12, "n_embd": 384, "head_size": 64, "dim_ffn": 4 * 384},
}

#: the backbone fields of tagger checkpoints written before the backbone became its own section
#: (one flat dict; dim_ffn 0 = 4·D, LoRA ranks 0 = the backbone's defaults), with their defaults
_FLAT_BACKBONE = {"version": "6", "n_layer": 12, "n_embd": 192, "head_size": 64, "dim_ffn": 0,
                  "tm_lora_rank": 0, "decay_lora_rank": 0}


@dataclass
class AudioTaggerConfig:
    """The tagger around the backbone (the `model:` section of an audio recipe; the blocks are
    the `backbone:` section).

    Attributes:
        patch, stride: patch size and step over (time frames, mel bins).
        shift_distance, shift_gamma: Q-Shift's distance s (patches) and group fraction γ.
        drop_path: stochastic-depth rate of the last block (linear from 0 over depth).
        pool: "mean" (the paper's mean-pooled head), "max" or "mean+max" over patches.
        num_classes, num_mel_bins, target_frames: output classes and the input size the
            position table is learned for; None = set by the runner from the data and features.
    """

    patch: tuple[int, int] = (16, 16)
    stride: tuple[int, int] = (16, 16)
    shift_distance: int = 1
    shift_gamma: float = 0.25
    drop_path: float = 0.0
    pool: Literal["mean", "max", "mean+max"] = "mean"
    num_classes: int | None = None
    num_mel_bins: int | None = None
    target_frames: int | None = None

    def __post_init__(self) -> None:
        for name in ("patch", "stride"):
            value = getattr(self, name)
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
                raise ConfigError(name, value, "two ints >= 1 (time frames, mel bins)")
        check_int(self, "shift_distance", min=1)
        check_float(self, "shift_gamma", gt=0.0, max=0.25)  # four groups of γ·C channels
        check_float(self, "drop_path", min=0.0, lt=1.0)
        check_choice(self, "pool", ("mean", "max", "mean+max"))
        for name in ("num_classes", "num_mel_bins", "target_frames"):
            check_int(self, name, min=1, optional=True)
        if self.target_frames is not None and self.num_mel_bins is not None:
            if self.target_frames < self.patch[0] or self.num_mel_bins < self.patch[1]:
                raise ConfigError("patch", self.patch, f"at most the input ({self.target_frames} frames, "
                                                       f"{self.num_mel_bins} mel bins)")


@dataclass
class AudioRWKVConfig(AudioTaggerConfig):
    """A whole AudioRWKV tagger: the tagger's settings and its `backbone` (an `RWKVConfig`:
    version "6" Finch, "5" Eagle or "goldfinch"; `vocab_size` is unused by the encoder). What a
    tagger checkpoint stores (`to_dict`, read back by `from_dict`)."""

    backbone: RWKVConfig = field(default_factory=RWKVConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.backbone, RWKVConfig):
            raise ConfigError("backbone", self.backbone, "an RWKVConfig")

    @classmethod
    def of(cls, tagger: AudioTaggerConfig, backbone: RWKVConfig, **changes: Any) -> "AudioRWKVConfig":
        """The tagger's settings (with `changes`) around `backbone`."""
        values = {f.name: getattr(tagger, f.name) for f in dataclasses.fields(AudioTaggerConfig)}
        return cls(**{**values, **changes}, backbone=backbone)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AudioRWKVConfig":
        """The config `to_dict` wrote; also the flat dict of older tagger checkpoints (backbone
        fields beside the tagger's, see `_FLAT_BACKBONE`), converted."""
        known = {f.name for f in dataclasses.fields(cls)} | set(_FLAT_BACKBONE)
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown AudioRWKVConfig keys {unknown}", fix=f"valid keys: {sorted(known)}")
        values = dict(values)
        flat = {k: values.pop(k) for k in _FLAT_BACKBONE if k in values}
        if flat:
            if "backbone" in values:
                raise UserError(f"AudioRWKVConfig keys {sorted(flat)} beside a 'backbone' section",
                                fix="put them in the backbone section")
            values["backbone"] = _backbone_of_flat({**_FLAT_BACKBONE, **flat})
        return config_from_dict(cls, values)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "AudioRWKVConfig":
        """AudioRWKV-T or -S ("T"/"S"), with overrides (backbone fields or the tagger's)."""
        key = name.upper().removeprefix("AUDIORWKV-")
        if key not in PRESETS:
            raise UserError(f"unknown AudioRWKV preset {name!r}", fix=f"known: {sorted(PRESETS)}")
        names = {f.name for f in dataclasses.fields(RWKVConfig)}
        backbone = {**PRESETS[key], **{k: v for k, v in overrides.items() if k in names}}
        return cls(**{k: v for k, v in overrides.items() if k not in names}, backbone=RWKVConfig(**backbone))


def _backbone_of_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """An old flat config's backbone fields as an RWKVConfig section (0 meant "the default")."""
    return {"version": flat["version"], "n_layer": flat["n_layer"], "n_embd": flat["n_embd"],
            "head_size": flat["head_size"], "dim_ffn": flat["dim_ffn"] or 4 * flat["n_embd"],
            "tm_lora_rank": flat["tm_lora_rank"] or None, "decay_lora_rank": flat["decay_lora_rank"] or None}


class AudioRWKV(RWKVEncoder):
    """The tagger's encoder and head: fbank [B, T, M] → logits [B, num_classes].

    `init_weights=False` skips the initialisation (weights about to be loaded, or a meta-device
    model built only to count parameters)."""

    def __init__(self, config: AudioRWKVConfig, init_weights: bool = True) -> None:
        super().__init__()
        for key in ("num_classes", "num_mel_bins", "target_frames"):
            if getattr(config, key) is None:
                raise ValueError(f"AudioRWKVConfig.{key} is not set (the runner sets it from the data)")
        self.config = config
        bb = config.backbone
        D = bb.n_embd
        self.patch_embed = PatchEmbed(D, config.target_frames, config.num_mel_bins, config.patch, config.stride)
        self.ln0 = nn.LayerNorm(D, eps=bb.layer_norm_eps)
        shift = partial(q_shift, distance=config.shift_distance, gamma=config.shift_gamma)  # (x, grid)
        self.add_blocks(bb, shift=shift, drop_path=config.drop_path)
        self.ln_out = nn.LayerNorm(D, eps=bb.layer_norm_eps)
        self.head = nn.Linear(D, config.num_classes)
        if init_weights and self.head.weight.device.type != "meta":
            self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The backbone's initialisation of its family (App. I; GoldFinch's own) for the blocks
        and norms; small head."""
        self.init_block_weights_()  # μ/decay schedules, zeroed outputs, norms
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """fbank [B, T, M] → encoded patch tokens [B, H·W, D] (after LN_out, before pooling)."""
        tokens, grid = self.patch_embed(x)  # [B, H·W, D]
        return self.ln_out(self.run_blocks(self.ln0(tokens), grid))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """fbank [B, T, M] → pooled embedding [B, D]."""
        h = self.forward_tokens(x)
        pool = self.config.pool
        if pool == "mean":
            return h.mean(dim=1)
        if pool == "max":
            return h.amax(dim=1)
        return h.mean(dim=1) + h.amax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fbank [B, T, M] (normalised) → logits [B, num_classes]."""
        if x.dim() != 3:
            raise ValueError(f"AudioRWKV: expected fbank [B, T, M], got shape {tuple(x.shape)}")
        return self.head(self.forward_features(x))


def parameter_report(model: AudioRWKV) -> dict[str, int]:
    """Trainable parameters by part, the total, and the total with a frozen STFT front end."""
    parts = {"patch_embed": model.patch_embed.proj, "pos_embed": None, "blocks": model.blocks,
             "norms": None, "head": model.head}
    out = {}
    for name, module in parts.items():
        if module is not None:
            out[name] = sum(p.numel() for p in module.parameters())
    out["pos_embed"] = model.patch_embed.pos_embed.numel()
    out.update(model.family_parameter_counts())  # GoldFinch: W_a, W_b of the key cache
    out["norms"] = sum(p.numel() for m in (model.ln0, model.ln_out) for p in m.parameters())
    out["total"] = sum(p.numel() for p in model.parameters())
    out["total_with_stft_front_end"] = out["total"] + STFT_FRONT_END_PARAMS
    return out
