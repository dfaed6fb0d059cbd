"""Goose (RWKV-7, x070) channel mix: a token-shift lerp, then ReLU² through a 4·D hidden layer.

    out = W_v · ReLU(W_k (x + (x' - x)·x_k))²        (official keys `ffn.x_k`, `ffn.key`, `ffn.value`)

No receptance gate (Eagle/Finch have σ(r') in front). Like the time mix, `shifted` may replace the
causal token shift x' (encoders pass Q-Shift's output).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import RWKVConfig
from ..linear import Linear
from ..time_mix import token_shift


class ChannelMixGoose(nn.Module):
    """Channel mix of Goose block `layer_id`: x_k [1, 1, D], key [F, D], value [D, F]."""

    def __init__(self, config: RWKVConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        D, F = config.n_embd, config.dim_ffn
        self.x_k = nn.Parameter(torch.empty(1, 1, D))
        self.key = Linear(D, F, bias=False)
        self.value = Linear(F, D, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, shifted: torch.Tensor | None = None):
        """x: normed input [B, T, D]; x_prev [B, D]. Returns (output [B, T, D], new x_prev [B, D])."""
        if shifted is None:
            shifted = token_shift(x, x_prev)
        k = torch.relu(self.key(torch.addcmul(x, shifted - x, self.x_k))).square()  # [B, T, F]
        return self.value(k), x[:, -1].clone()  # clone: not a view of x
