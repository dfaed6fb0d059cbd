"""The frozen CLIP vision tower: images [B, 3, S, S] -> patch features [B, P, C].

Two backends:
- `open_clip` (default): a named model (`ViT-L-14-336`) with `pretrained` = an open_clip tag
  (`openai`, fetched into the Hugging Face cache) or a local weights file; or `model_name: custom`
  with the `custom` ViT settings (randomly initialised; the tests and the quickstart use a tiny one).
- `hf`: transformers' `CLIPVisionModel` from a local folder (`hf_path`), the tower the released
  VisualRWKV checkpoints were trained with.

`layer` picks the transformer block whose output is used (-1 = last, as VisualRWKV; -2 =
penultimate, as LLaVA); `keep_cls` keeps the class token in front of the patch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rwkv_mm.errors import ConfigError, UserError, check_choice, check_int

from .projector import PROJECTORS

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class CustomViTConfig:
    """A ViT built from open_clip's own VisionTransformer class (for `model_name: custom`)."""

    image_size: int = 64
    patch_size: int = 16
    width: int = 64
    layers: int = 2
    head_width: int = 32
    seed: int = 0  # the random (frozen) weights are a function of this seed

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "width", "layers", "head_width"):
            check_int(self, name, min=1)
        check_int(self, "seed", min=0)
        if self.image_size % self.patch_size:
            raise ConfigError("patch_size", self.patch_size, f"a divisor of image_size={self.image_size}")
        if self.width % self.head_width:
            raise ConfigError("head_width", self.head_width, f"a divisor of width={self.width}")


@dataclass
class VisionConfig:
    """The vision front end of VisualRWKV (the `vision:` section of a recipe)."""

    backend: str = "open_clip"  # open_clip | hf
    model_name: str = "ViT-L-14-336"  # open_clip model name, or "custom"
    pretrained: str = "openai"  # open_clip tag or a local weights file ("" = random, tests only)
    hf_path: str = ""  # backend hf: a local folder holding a transformers CLIPVisionModel
    custom: CustomViTConfig = field(default_factory=CustomViTConfig)
    layer: int = -1  # -1 last block (VisualRWKV), -2 penultimate (LLaVA)
    keep_cls: bool = True  # VisualRWKV-5 keeps CLS (577 tokens at 336 px); LLaVA drops it
    grid_size: int = -1  # patch pooling as VisualRWKV-6: -1 none, 0 CLS only, g >= 1: g x g averages
    pad_to_square: bool = False  # LLaVA's "pad": expand to a square with the mean colour first
    projector: str = "linear"  # linear (VisualRWKV) | mlp2x_gelu (LLaVA-1.5)

    def __post_init__(self) -> None:
        check_choice(self, "backend", ("open_clip", "hf"))
        check_int(self, "layer")  # its range depends on the tower: checked when it is built
        check_int(self, "grid_size", min=-1)
        check_choice(self, "projector", PROJECTORS)
        if self.grid_size == 0 and not self.keep_cls:
            raise ConfigError("grid_size", 0, "-1 or >= 1 when keep_cls=false (0 keeps only the CLS token)")


class VisionTower(nn.Module):
    """A frozen CLIP ViT returning the chosen layer's tokens.

    Attributes:
        image_size: the square input size in pixels.
        hidden_size: C, the feature width.
        num_tokens: P, tokens per image (patches, plus one when `keep_cls`).
    """

    def __init__(self, vit: nn.Module, backend: str, image_size: int, hidden_size: int,
                 num_patches: int, layer: int, keep_cls: bool, grid_size: int = -1) -> None:
        super().__init__()
        self.vit = vit
        self.backend = backend
        self.image_size, self.hidden_size = image_size, hidden_size
        self.layer, self.keep_cls, self.grid_size = layer, keep_cls, grid_size
        side = int(round(num_patches ** 0.5))
        if grid_size == 0 and not keep_cls:
            raise ConfigError("vision.grid_size", grid_size, "-1 or >= 1 when keep_cls=false (0 keeps "
                              "only the CLS token)")
        if grid_size > 0 and (side * side != num_patches or side % grid_size):
            raise ConfigError("vision.grid_size", grid_size,
                              f"-1, 0 or a g that divides the {side}x{side} patch grid")
        n_outputs = _n_layer_outputs(vit, backend)
        if not -n_outputs <= layer < n_outputs:
            raise ConfigError("vision.layer", layer, f"an index into this tower's {n_outputs} layer "
                              f"outputs, in [{-n_outputs}, {n_outputs - 1}] (-1 = last)")
        self.patch_side = side
        n_patch_tokens = num_patches if grid_size < 0 else grid_size * grid_size
        self.num_tokens = n_patch_tokens + int(keep_cls)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VisionTower":
        """The tower stays in eval mode (frozen in both stages)."""
        return super().train(False)

    def _pool(self, cls: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        """cls [B, 1, C] (or None), patches [B, P, C] -> the configured tokens [B, num_tokens, C]."""
        if self.grid_size >= 0:
            B, P, C = patches.shape
            if self.grid_size == 0:
                patches = patches[:, :0]
            else:
                grid = patches.transpose(1, 2).reshape(B, C, self.patch_side, self.patch_side)
                k = self.patch_side // self.grid_size
                patches = torch.nn.functional.avg_pool2d(grid, k).flatten(2).transpose(1, 2)  # [B, g*g, C]
        return patches if cls is None else torch.cat([cls, patches], dim=1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, S, S] normalised pixels -> features [B, P, C]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected [B, 3, {self.image_size}, {self.image_size}], "
                             f"got {tuple(images.shape)}")
        dtype = next(self.vit.parameters()).dtype
        images = images.to(dtype)
        if self.backend == "hf":
            out = self.vit(pixel_values=images, output_hidden_states=True)
            feats = out.hidden_states[self.layer]  # [B, 1 + P, C]; hidden_states[0] = embeddings
            return self._pool(feats[:, :1] if self.keep_cls else None, feats[:, 1:])
        n_blocks = len(self.vit.transformer.resblocks)
        index = self.layer % n_blocks
        out = self.vit.forward_intermediates(images, indices=[index], output_fmt="NLC",
                                             output_extra_tokens=True, intermediates_only=True)
        patches = out["image_intermediates"][0]  # [B, P, C]
        cls = out["image_intermediates_prefix"][0] if self.keep_cls else None  # [B, 1, C]
        return self._pool(cls, patches)


def _n_layer_outputs(vit: nn.Module, backend: str) -> int:
    """How many outputs `layer` can index: transformers' hidden_states (embeddings + one per
    layer) or open_clip's residual blocks."""
    if backend == "hf":
        return vit.config.num_hidden_layers + 1
    return len(vit.transformer.resblocks)


def _open_clip_weights_error(cfg: VisionConfig, err: Exception) -> UserError:
    from huggingface_hub.constants import HF_HUB_CACHE
    return UserError(
        f"vision tower {cfg.model_name!r} with pretrained={cfg.pretrained!r}: the weights could not be "
        f"loaded ({type(err).__name__}: {str(err).splitlines()[0][:200]}); looked for open_clip's "
        f"download in the Hugging Face cache ({HF_HUB_CACHE})",
        fix="set vision.pretrained=/path/to/open_clip_pytorch_model.bin (a local file), copy the "
        "hub download into that cache on a machine with network access, or use "
        "vision.backend=hf vision.hf_path=/folder/with/a/CLIPVisionModel")


def _build_open_clip(cfg: VisionConfig) -> VisionTower:
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    if cfg.model_name == "custom":
        c = cfg.custom
        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            vit = _build_vision_tower(c.width, CLIPVisionCfg(image_size=c.image_size, layers=c.layers,
                                                             width=c.width, patch_size=c.patch_size,
                                                             head_width=c.head_width))
        if cfg.pretrained:
            _load_visual_weights(vit, Path(cfg.pretrained))
        grid = c.image_size // c.patch_size
        return VisionTower(vit, "open_clip", c.image_size, c.width, grid * grid, cfg.layer, cfg.keep_cls,
                           cfg.grid_size)
    if cfg.model_name not in open_clip.list_models():
        raise ConfigError("vision.model_name", cfg.model_name, "an open_clip model name (e.g. "
                          "ViT-L-14-336, ViT-L-14, ViT-B-16) or 'custom'")
    try:
        model = open_clip.create_model(cfg.model_name, pretrained=cfg.pretrained or None,
                                       require_pretrained=bool(cfg.pretrained))
    except (RuntimeError, OSError, FileNotFoundError) as err:
        raise _open_clip_weights_error(cfg, err) from None
    vit = model.visual
    size = vit.image_size[0] if isinstance(vit.image_size, tuple) else vit.image_size
    grid = vit.grid_size[0] * vit.grid_size[1]
    width = vit.transformer.width
    return VisionTower(vit, "open_clip", size, width, grid, cfg.layer, cfg.keep_cls, cfg.grid_size)


def _load_visual_weights(vit: nn.Module, path: Path) -> None:
    """Load a saved tower state dict (keys of open_clip's VisionTransformer, optionally `visual.`)."""
    from rwkv_mm.backbone import read_state_dict

    if not path.is_file():
        raise FileNotFoundError(f"vision.pretrained: weights file not found: {path}")
    sd = {k.removeprefix("visual."): v for k, v in read_state_dict(path).items()}
    try:
        missing, _ = vit.load_state_dict(sd, strict=False)
    except RuntimeError as err:  # a shape mismatch
        raise UserError(f"vision-tower weights do not fit vision.custom ({str(err).splitlines()[-1].strip()})",
                        where=str(path)) from None
    if missing:
        raise UserError(f"missing vision-tower keys {missing[:5]}", where=str(path),
                        fix="vision.pretrained must hold the tower's state dict")


def _build_hf(cfg: VisionConfig) -> VisionTower:
    from transformers import CLIPVisionModel

    folder = Path(cfg.hf_path)
    if not cfg.hf_path or not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"vision.hf_path={cfg.hf_path!r}: expected a local folder with config.json and the weights "
            "of a transformers CLIPVisionModel (e.g. a copy of openai/clip-vit-large-patch14-336)")
    vit = CLIPVisionModel.from_pretrained(str(folder), local_files_only=True)
    c = vit.config
    grid = (c.image_size // c.patch_size) ** 2
    return VisionTower(vit, "hf", c.image_size, c.hidden_size, grid, cfg.layer, cfg.keep_cls, cfg.grid_size)


def build_vision_tower(cfg: VisionConfig) -> VisionTower:
    """The frozen tower named by `cfg` (errors say where weights were looked for)."""
    if cfg.backend == "open_clip":
        return _build_open_clip(cfg)
    if cfg.backend == "hf":
        return _build_hf(cfg)
    raise ConfigError("vision.backend", cfg.backend, "open_clip or hf")
