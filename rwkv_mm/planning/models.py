"""The model a recipe trains, built on the meta device (no weights read or allocated), with the
stage's freezing applied, and one sequence's forward pass for the tracer.

Each runner the planner knows has a builder here (`PLANNED`): the LM runner, VisualRWKV (LM,
frozen CLIP tower, projector; stage rules), the audio tagger. Any other runner whose config has a
`backbone:` section is planned as that language model (said in the notes). Shapes come from the
`backbone:` section; when it is null they come from the weights the recipe names if those exist
(only their header is read), else a `UserError` says which keys to set.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rwkv_mm.backbone import (RWKVConfig, build_backbone, config_from_dict, config_from_state_dict,
                              read_state_dict)
from rwkv_mm.errors import UserError
from rwkv_mm.training.freezing import set_trainable

from .memory import HeadSpec

FAMILY_NAMES = {"5": "Eagle", "6": "Finch", "goldfinch": "GoldFinch", "7": "Goose"}


@dataclass
class PlanModel:
    """What the planner sizes: `model` on the meta device (requires_grad as the run sets it),
    `run(model)` one sequence's forward pass up to the LM head (meta tensors), `positions` per
    sequence, the `head` its loss runs, the language model's `backbone` config, a one-line
    `summary` and `notes` on what was assumed."""

    model: nn.Module
    run: Callable[[nn.Module], None]
    positions: int
    head: HeadSpec | None
    backbone: RWKVConfig
    summary: str
    notes: list[str] = field(default_factory=list)
    frozen_parts: dict[str, int] = field(default_factory=dict)  # e.g. {"CLIP tower": n params}


def family(config: RWKVConfig) -> str:
    return f"{FAMILY_NAMES.get(config.version, config.version)} L{config.n_layer} D{config.n_embd}"


def _shape_from(section: RWKVConfig | None, sources: dict[str, str | None]) -> RWKVConfig:
    """The backbone config: the recipe's section, else read from the first existing weights file
    in `sources` (recipe key -> path); a UserError naming the keys when neither gives it."""
    if section is not None:
        return section
    for key, path in sources.items():
        if not path:
            continue
        p = Path(path)
        if p.is_dir() and (p / "visual_rwkv.json").is_file():  # a VisualRWKV stage folder
            from rwkv_mm.vision.checkpoint import read_meta

            meta = read_meta(p)
            if meta.get("backbone_config") is not None:
                return config_from_dict(RWKVConfig, meta["backbone_config"], "backbone_config")
            p = p / meta["backbone"]
        if p.is_file():
            return config_from_state_dict(read_state_dict(p), source=str(p))
    named = " / ".join(f"{k}={v}" for k, v in sources.items() if v) or " or ".join(sources)
    raise UserError(f"backbone: null takes the model's shape from {named}, which is not there",
                    where="backbone", fix="set the backbone section to plan without the weights, e.g. "
                    "backbone.version=6 backbone.n_layer=24 backbone.n_embd=2048")


def _lm_head(model: nn.Module, rows: int, l2wrap: bool) -> HeadSpec:
    weight = model.head.weight
    return HeadSpec(rows, weight.shape[0], weight.shape[1], l2wrap, weight.requires_grad)


def _freeze(model: nn.Module, train) -> None:
    """What trains, as the Trainer decides it (`set_trainable`), with PiSSA planned as the LoRA it
    trains (no SVD of meta tensors: the same shapes)."""
    if train.peft is not None and train.peft.method == "pissa":
        train = dataclasses.replace(train, peft=dataclasses.replace(train.peft, method="lora"))
    set_trainable(model, train)


def plan_language_model(cfg: Any, note: str = "") -> PlanModel:
    """A language model trained on `data.ctx_len` tokens per sequence (the LM runner's loss:
    every position has a target; L2Wrap over all of them when train.l2wrap)."""
    config = _shape_from(cfg.backbone, {"init_from": getattr(cfg, "init_from", None)})
    T = getattr(getattr(cfg, "data", None), "ctx_len", None) or 1024
    with torch.device("meta"):
        model = build_backbone(config, init_weights=False)
    _freeze(model, cfg.train)

    def run(m: nn.Module) -> None:
        m(inputs_embeds=m.emb(torch.zeros(1, T, dtype=torch.long)), return_hidden=True)

    notes = [note] if note else []
    if not getattr(getattr(cfg, "data", None), "ctx_len", None):
        notes.append("no data.ctx_len: planned at T = 1024")
    return PlanModel(model, run, T, _lm_head(model, T, cfg.train.l2wrap), config,
                     f"{family(config)} V{config.vocab_size}, T {T}", notes)


def _meta_tower(vision) -> nn.Module:
    """The CLIP tower on the meta device, weights never loaded."""
    from rwkv_mm.vision.tower import VisionTower, build_vision_tower

    if vision.backend != "open_clip":
        raise UserError("the planner builds CLIP towers of vision.backend=open_clip only", where="vision.backend",
                        fix="plan with vision.backend=open_clip vision.model_name=<the same ViT>")
    with torch.device("meta"):
        if vision.model_name == "custom":
            return build_vision_tower(dataclasses.replace(vision, pretrained=""))
        import open_clip

        if vision.model_name not in open_clip.list_models():
            raise UserError(f"unknown open_clip model {vision.model_name!r}", where="vision.model_name")
        quiet = logging.root.manager.disable
        logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded
        try:
            vit = open_clip.create_model(vision.model_name, pretrained=None, device="meta").visual
        finally:
            logging.disable(quiet)
    size = vit.image_size[0] if isinstance(vit.image_size, tuple) else vit.image_size
    grid = vit.grid_size[0] * vit.grid_size[1]
    return VisionTower(vit, "open_clip", size, vit.transformer.width, grid, vision.layer, vision.keep_cls,
                       vision.grid_size)


def plan_visual(cfg: Any) -> PlanModel:
    """VisualRWKV: one image (the tower's P tokens, first) and T - P text positions per sequence,
    every text position counted as an answer token (an upper bound for the head)."""
    from rwkv_mm.runners.visual_rwkv import stage_train_config
    from rwkv_mm.vision.model import VisualRWKV
    from rwkv_mm.vision.projector import build_projector

    config = _shape_from(cfg.backbone, {"init_from": cfg.init_from, "backbone_weights": cfg.backbone_weights})
    tower = _meta_tower(cfg.vision)
    with torch.device("meta"):
        rwkv = build_backbone(config, init_weights=False)
        proj = build_projector(cfg.vision.projector, tower.hidden_size, config.n_embd)
    model = VisualRWKV(rwkv, tower, proj, cfg.model.reverse_image_odd_layers)
    _freeze(model, stage_train_config(cfg))
    T, P = cfg.data.ctx_len, tower.num_tokens
    if T <= P:
        raise UserError(f"data.ctx_len={T} leaves no text after the {P} image tokens", where="data.ctx_len")
    cached = cfg.data.cache_features

    def run(m: VisualRWKV) -> None:
        if cached:
            feats = torch.zeros(1, P, m.vit.hidden_size)
        else:
            feats = m.vit(torch.zeros(1, 3, m.vit.image_size, m.vit.image_size))  # no_grad inside
        x = torch.cat([m.proj(feats), m.rwkv.emb(torch.zeros(1, T - P, dtype=torch.long))], dim=1)
        order = None
        if m.reverse_image_odd_layers:  # the image span (positions 0..P-1) reversed in odd layers
            perm = torch.cat([torch.arange(P - 1, -1, -1), torch.arange(P, T)]).unsqueeze(0)
            order = lambda layer: perm if layer % 2 else None  # noqa: E731
        m.rwkv(inputs_embeds=x, return_hidden=True, layer_order=order)

    notes = [f"each sequence: 1 image ({P} tokens) + {T - P} text positions, all counted as answer tokens"]
    if cached:
        notes.append("data.cache_features: tower features computed once, not per step (no tower FLOPs)")
    tower_params = sum(p.numel() for p in tower.parameters())
    return PlanModel(model, run, T, _lm_head(rwkv, T - P, False), config,
                     f"VisualRWKV stage {cfg.stage}: {family(config)} + CLIP {cfg.vision.model_name} "
                     f"({P} image tokens), T {T}", notes, {"CLIP tower": tower_params})


def plan_audio(cfg: Any) -> PlanModel:
    """AudioRWKV: one clip of `features.target_frames` fbank frames per sequence; the loss is BCE
    over the classes (no LM head)."""
    from rwkv_mm.audio.model import AudioRWKV
    from rwkv_mm.runners.audio_tagging import resolve_model_config

    notes = []
    try:
        from rwkv_mm.audio.datasets import read_class_labels

        n_classes = len(read_class_labels(cfg.data.class_labels).names)
    except (OSError, UserError):
        n_classes = 527
        notes.append(f"{cfg.data.class_labels} not readable: planned with AudioSet's 527 classes")
    backbone = cfg.backbone
    if backbone is None:
        if not (cfg.init_from and Path(cfg.init_from).is_file()):
            _shape_from(None, {"init_from": cfg.init_from})  # raises, naming the keys
        from rwkv_mm.audio.checkpoint import read_tagger_checkpoint
        from rwkv_mm.audio.model import AudioRWKVConfig

        backbone = AudioRWKVConfig.from_dict(read_tagger_checkpoint(cfg.init_from)["model_config"]).backbone
    with torch.device("meta"):
        model = AudioRWKV(resolve_model_config(cfg, n_classes, backbone), init_weights=False)
    _freeze(model, cfg.train)
    frames, mels = cfg.features.target_frames, cfg.features.num_mel_bins
    H, W = model.patch_embed.grid

    def run(m: nn.Module) -> None:
        m(torch.zeros(1, frames, mels))

    return PlanModel(model, run, H * W, None, backbone,
                     f"AudioRWKV {family(backbone)} (bidirectional), {H}x{W} = {H * W} patches", notes)


#: runner name -> its planner builder
PLANNED: dict[str, Callable[[Any], PlanModel]] = {
    "lm_music": plan_language_model,
    "visual_rwkv": plan_visual,
    "audio_tagging": plan_audio,
}


def plan_model(runner: str, cfg: Any) -> PlanModel:
    """The `PlanModel` of a recipe's runner and config."""
    if runner in PLANNED:
        return PLANNED[runner](cfg)
    if isinstance(getattr(cfg, "backbone", None), RWKVConfig) and hasattr(cfg, "train"):
        return plan_language_model(cfg, note=f"runner {runner!r}: planned as its backbone language model")
    raise UserError(f"the planner does not know runner {runner!r} and its config has no backbone section",
                    fix=f"plan a recipe of {', '.join(PLANNED)}")
