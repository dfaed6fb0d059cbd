"""Tiny VisualRWKV models for fast CPU tests."""

from __future__ import annotations

import torch

from rwkv_mm.vision.model import VisualRWKV
from rwkv_mm.vision.projector import build_projector
from rwkv_mm.vision.tower import CustomViTConfig, VisionConfig, build_vision_tower
from rwkv_test_utils import tiny_model


def tiny_vision_config(**kwargs) -> VisionConfig:
    """A 32-px, 16-px-patch custom ViT: 4 patches (+ CLS)."""
    return VisionConfig(model_name="custom", pretrained="",
                        custom=CustomViTConfig(image_size=32, patch_size=16, width=32, layers=1, head_width=16),
                        **kwargs)


def tiny_visual_model(version: str = "5", reverse: bool = False, seed: int = 0,
                      vision: VisionConfig | None = None, n_layer: int = 2) -> VisualRWKV:
    """A randomly weighted fusion model with the World vocabulary (65536) and D=32 (any backbone
    version; GoldFinch with n_layer=3 has 2 Finch-C2 layers and 1 GOLD layer)."""
    vision = vision or tiny_vision_config()
    rwkv = tiny_model(version, n_layer=n_layer, n_embd=32, vocab_size=65536, head_size=16, seed=seed)
    tower = build_vision_tower(vision)
    torch.manual_seed(seed)
    proj = build_projector(vision.projector, tower.hidden_size, 32)
    with torch.no_grad():
        for p in proj.parameters():
            p.normal_(0, 0.5)
    return VisualRWKV(rwkv, tower, proj, reverse).eval()
