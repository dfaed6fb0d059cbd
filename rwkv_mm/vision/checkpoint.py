"""VisualRWKV files: ours (a folder) and released VisualRWKV checkpoints (one state dict).

Ours: `<dir>/backbone.pth` (the LM in BlinkDL's official layout, readable by `rwkv-mm generate`
and BlinkDL's runtime; a GoldFinch LM in the GoldFinch code's layout, which `load_model` and
`state_dict_to_model` recognise by its key-cache weights), `<dir>/projector.pth` (the projector's state dict) and
`<dir>/visual_rwkv.json` (vision tower settings, template, image position, layer reversal, and
the backbone's RWKVConfig as `backbone_config`: the settings its weights do not show, such as
`layer_norm_eps` or GoldFinch's `rope_base`; folders written before it are read by the shapes).
The tower's weights are not copied: it is frozen and rebuilt from its source.

Released (howard-hou/VisualRWKV v5/v6): one `.pth` with `rwkv.<official keys>`,
`vit.vision_model.*` (a transformers CLIPVisionModel) and `proj.weight` [D, C]; or the export
script's pair `*_rwkv.pth` (prefix stripped) + `*_visual.pth`. The CLIP weights inside are
used as they are (a CLIPVisionModel is rebuilt from their shapes), so no download is needed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from rwkv_mm.backbone import (CheckpointError, atomic_write, check_weights, config_from_dict, layer_count,
                              read_state_dict, save_model, state_dict_to_model)

from .conversation import IMAGE_POSITIONS, ChatTemplate
from .model import VisualRWKV
from .projector import build_projector
from .tower import VisionConfig, VisionTower, build_vision_tower

META_FILE = "visual_rwkv.json"


def save_visual_rwkv(model: VisualRWKV, out_dir: str | Path, vision: VisionConfig,
                     template: ChatTemplate, image_position: str) -> Path:
    """Write backbone.pth, projector.pth and visual_rwkv.json into `out_dir` (each atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model.rwkv, out_dir / "backbone.pth")
    proj_sd = {k: v.detach().cpu().contiguous() for k, v in model.proj.state_dict().items()}
    atomic_write(out_dir / "projector.pth", lambda tmp: torch.save(proj_sd, tmp))
    meta = {"format": "rwkv_mm.visual_rwkv/1", "backbone": "backbone.pth", "projector": "projector.pth",
            "vision": dataclasses.asdict(vision), "template": dataclasses.asdict(template),
            "image_position": image_position, "reverse_image_odd_layers": model.reverse_image_odd_layers,
            "backbone_config": model.rwkv.config.to_dict()}
    text = json.dumps(meta, indent=2)
    return atomic_write(out_dir / META_FILE, lambda tmp: Path(tmp).write_text(text))


def _projector_from_state_dict(sd: dict[str, torch.Tensor], source: str) -> tuple[str, nn.Module]:
    """Rebuild a projector from its weights: {weight} = linear; {0.*, 2.*} = mlp2x_gelu."""
    if set(sd) == {"weight"}:
        first = "weight"
        kind = "linear"
    elif {"0.weight", "0.bias", "2.weight", "2.bias"} == set(sd):
        first = "0.weight"
        kind = "mlp2x_gelu"
    else:
        raise CheckpointError(f"{source}: projector keys {sorted(sd)} are neither a bias-free Linear "
                              "(weight) nor mlp2x_gelu (0.weight, 0.bias, 2.weight, 2.bias)")
    check_weights(sd, source)
    if sd[first].dim() != 2:
        raise CheckpointError(f"tensor '{first}' has shape {list(sd[first].shape)}; expected 2 dims", where=source)
    out_dim, in_dim = sd[first].shape
    proj = build_projector(kind, in_dim, out_dim)
    try:
        proj.load_state_dict({k: v.float() for k, v in sd.items()})
    except RuntimeError as err:  # e.g. mlp2x_gelu layers whose sizes do not chain
        raise CheckpointError(f"projector weights of inconsistent shapes ({_first_line(err)})", where=source) from None
    return kind, proj


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def _hf_tower_from_state_dict(sd: dict[str, torch.Tensor], vision: VisionConfig, source: str) -> VisionTower:
    """A transformers CLIPVisionModel with the shapes and weights of `vit.*` keys."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    sd = {k.removeprefix("vision_model."): v for k, v in sd.items()  # transformers 4.x keys
          if not k.endswith("position_ids")}  # an int buffer of older transformers, rebuilt anyway
    check_weights(sd, source)
    pe = sd.get("embeddings.patch_embedding.weight")
    pos = sd.get("embeddings.position_embedding.weight")
    fc1 = sd.get("encoder.layers.0.mlp.fc1.weight")
    if pe is None or pos is None or fc1 is None:
        raise CheckpointError(f"{source}: vit.* keys are not a transformers CLIPVisionModel "
                              "(vision_model.embeddings.patch_embedding.weight missing)")
    if pe.dim() != 4 or pos.dim() != 2 or fc1.dim() != 2:
        raise CheckpointError("vit.* patch embedding, position embedding or fc1 weights of the wrong rank "
                              f"({list(pe.shape)}, {list(pos.shape)}, {list(fc1.shape)})", where=source)
    hidden, _, patch, _ = pe.shape
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    layers = layer_count(sd, source, prefix="encoder.layers.")  # 0..L-1 without a gap: L <= keys
    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=fc1.shape[0], num_hidden_layers=layers,
                           num_attention_heads=max(hidden // 64, 1), image_size=grid * patch,
                           patch_size=patch, hidden_act="quick_gelu")
    vit = CLIPVisionModel(cfg)
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in vit.state_dict()) else ""
    try:
        missing, unexpected = vit.load_state_dict({prefix + k: v.float() for k, v in sd.items()}, strict=False)
    except RuntimeError as err:  # shapes that do not fit the CLIP model they describe
        raise CheckpointError(f"vit.* weights of inconsistent shapes ({_first_line(err)})", where=source) from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"{source}: vit.* is missing CLIP keys {missing[:5]}")
    return VisionTower(vit, "hf", cfg.image_size, hidden, grid * grid, vision.layer, vision.keep_cls,
                       vision.grid_size)


def _split_released(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    rwkv, vit, proj = {}, {}, {}
    for key, value in sd.items():
        for prefix, target in (("rwkv.", rwkv), ("vit.", vit), ("proj.", proj),
                               ("vision_encoder.vit.", vit), ("vision_encoder.proj.", proj)):
            if key.startswith(prefix):
                target[key[len(prefix):]] = value
                break
    return rwkv, vit, proj


def load_released_visual_rwkv(path: str | Path, vision: VisionConfig | None = None,
                              visual_path: str | Path | None = None) -> VisualRWKV:
    """A released VisualRWKV checkpoint (one file, or `*_rwkv.pth` + `visual_path`).

    Its own CLIP weights (`vit.*`) are used when present; otherwise the tower comes from
    `vision` (default: open_clip ViT-L-14-336, last layer, CLS kept — VisualRWKV-5's choice).
    """
    path = Path(path)
    sd = read_state_dict(path)
    if visual_path is not None:
        sd = {**{f"rwkv.{k}": v for k, v in sd.items()}, **read_state_dict(visual_path)}
    rwkv_sd, vit_sd, proj_sd = _split_released(sd)
    if not rwkv_sd or not proj_sd:
        raise CheckpointError(f"{path}: expected keys rwkv.* and proj.* (a VisualRWKV checkpoint); "
                              f"got e.g. {sorted(sd)[:5]} — for the export script's pair pass the "
                              "_visual.pth file as visual_path")
    rwkv = state_dict_to_model(rwkv_sd, source=f"{path} (rwkv.*)")
    _, proj = _projector_from_state_dict(proj_sd, f"{path} (proj.*)")
    vision = vision or VisionConfig()
    tower = _hf_tower_from_state_dict(vit_sd, vision, f"{path} (vit.*)") if vit_sd else build_vision_tower(vision)
    return VisualRWKV(rwkv, tower, proj).eval()


def read_meta(folder: str | Path) -> dict:
    """The visual_rwkv.json of one of our saved models (a CheckpointError names it when broken)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a VisualRWKV folder ({META_FILE} missing)")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"not valid JSON ({err})", where=str(path),
                              fix="restore the file written by the training run") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"expected a JSON object, got {type(meta).__name__}", where=str(path))
    missing = [k for k in ("vision", "template", "backbone", "projector") if k not in meta]
    if missing:
        raise CheckpointError(f"no {', '.join(repr(k) for k in missing)} entry", where=str(path),
                              fix="restore the file written by the training run")
    for key in ("backbone", "projector"):
        name = meta[key]
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{key}={name!r}: expected a file name in the model folder", where=str(path))
    if meta.get("image_position", "first") not in IMAGE_POSITIONS:
        raise CheckpointError(f"image_position={meta['image_position']!r}: expected one of "
                              f"{', '.join(IMAGE_POSITIONS)}", where=str(path))
    if not isinstance(meta.get("reverse_image_odd_layers", False), bool):
        raise CheckpointError(f"reverse_image_odd_layers={meta['reverse_image_odd_layers']!r}: expected "
                              "true or false", where=str(path))
    return meta


def load_visual_rwkv(path: str | Path, with_tower: bool = True) -> tuple[VisualRWKV, dict]:
    """Our folder (or a released `.pth`) -> (model in eval mode, meta dict with `vision`
    (VisionConfig), `template` (ChatTemplate), `image_position`)."""
    path = Path(path)
    if path.is_file():
        model = load_released_visual_rwkv(path)
        return model, {"vision": VisionConfig(), "template": ChatTemplate(), "image_position": "first"}
    from rwkv_mm.backbone import RWKVConfig

    meta = read_meta(path)
    try:
        vision = config_from_dict(VisionConfig, meta["vision"], "vision")
        template = config_from_dict(ChatTemplate, meta["template"], "template")
        saved = meta.get("backbone_config")  # None in folders written before it was kept
        config = None if saved is None else config_from_dict(RWKVConfig, saved, "backbone_config")
    except ValueError as err:  # ConfigDictError / ConfigError naming the key
        raise CheckpointError(str(err), where=str(path / META_FILE)) from None
    rwkv = state_dict_to_model(read_state_dict(path / meta["backbone"]), config, source=str(path / meta["backbone"]))
    _, proj = _projector_from_state_dict(read_state_dict(path / meta["projector"]), str(path / meta["projector"]))
    tower = build_vision_tower(vision) if with_tower else None
    model = VisualRWKV(rwkv, tower, proj, meta.get("reverse_image_odd_layers", False)).eval()
    return model, {"vision": vision, "template": template, "image_position": meta.get("image_position", "first")}
