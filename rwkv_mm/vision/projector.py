"""Projectors from CLIP features to the language model's embedding width."""

from __future__ import annotations

from torch import nn

from rwkv_mm.errors import ConfigError

PROJECTORS = ("linear", "mlp2x_gelu")


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """`linear`: one Linear without bias (VisualRWKV); `mlp2x_gelu`: Linear-GELU-Linear (LLaVA-1.5).

    Maps [B, P, in_dim] CLIP features to [B, P, out_dim] embeddings.
    """
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    raise ConfigError("vision.projector", kind, "one of " + ", ".join(PROJECTORS))
