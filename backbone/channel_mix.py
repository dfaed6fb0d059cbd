"""Channel mixing (the feed-forward block) of Eagle and Finch: σ(r') ⊙ (ReLU(k')² W_v')."""

from __future__ import annotations

import torch
from torch import nn

from .config import RWKVConfig
from .linear import Linear
from .time_mix import token_shift


class ChannelMix(nn.Module):
    """Channel mix; Eagle names its lerp weights `time_mix_{k,r}` (weight on the current token),
    Finch `time_maa_{k,r}` (weight on the previous token) — the official keys of each."""

    def __init__(self, config: RWKVConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.finch = config.version in ("6", "goldfinch")  # GoldFinch keeps Finch's channel mix
        D, F = config.n_embd, config.dim_ffn
        prefix = "time_maa" if self.finch else "time_mix"
        self.mix_names = (f"{prefix}_k", f"{prefix}_r")
        for name in self.mix_names:
            setattr(self, name, nn.Parameter(torch.empty(1, 1, D)))
        self.key = Linear(D, F, bias=False)
        self.receptance = Linear(D, D, bias=False)
        self.value = Linear(F, D, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, shifted: torch.Tensor | None = None):
        """x: normed input [B, T, D]; x_prev: [B, D]. Returns (output [B, T, D], new x_prev [B, D]).

        `shifted` [B, T, D] replaces the token shift (encoders pass Q-Shift's output; x_prev is
        then unused and may be None)."""
        if shifted is None:
            shifted = token_shift(x, x_prev)
        mix_k, mix_r = (getattr(self, n) for n in self.mix_names)
        if self.finch:
            delta = shifted - x
            xk, xr = x + delta * mix_k, x + delta * mix_r
        else:
            delta = x - shifted
            xk, xr = shifted + delta * mix_k, shifted + delta * mix_r
        k = torch.relu(self.key(xk)).square()
        return torch.sigmoid(self.receptance(xr)) * self.value(k), x[:, -1].clone()  # not a view of x
