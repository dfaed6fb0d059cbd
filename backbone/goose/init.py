"""Initialisation of Goose (RWKV-7) as RWKV-LM's x070 training code does it (RWKV-v7/train_temp:
`RWKV_Tmix_x070.__init__`, `RWKV_CMix_x070.__init__`, then `generate_init_weight`).

With l the layer, L layers, C = D, N the head size, ddd_i = i/C, r01 = l/(L-1), r10 = 1 - l/L,
linear_n = n/(C-1) - 0.5 and zigzag_n = z·|z| for z = ((n mod N) - (N-1)/2) / ((N-1)/2):

- token shift: x_r, x_g = 1 - ddd^(0.2·r10); x_w, x_a = 1 - ddd^(0.9·r10); x_k, x_v = 1 - ddd^(0.7·r10);
  channel mix x_k = 1 - ddd^(r10^4);
- decay w0_n = -6 + 6·(n/(C-1))^(1 + r01^0.3) + 0.5 + 2.5·zigzag_n;
  a0 = -0.19 + 0.3·zigzag + 0.4·linear; v0 = 0.73 - 0.4·linear;
  k_k = 0.71 - 0.1·linear; k_a = 1.02; r_k = -0.04;
- LoRAs: first matrices (w1, a1, v1, g1) zero, second (w2, a2, v2, g2) orthogonal with gain 0.1
  (times sqrt(rows/cols) when rows > cols);
- `att.ln_x.weight` = ((l+1)/L)^0.7, other norms 1 and 0;
- embedding U(-1e-4, 1e-4); head orthogonal with gain 0.5·sqrt(V/D) (0.5 when V <= D);
  att.receptance, att.value, ffn.key orthogonal gain 1, att.key gain 0.1; att.output and
  ffn.value zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..init import channel_ratio, init_norms_and_matrices_

_ZERO_MATRICES = ("att.output", "ffn.value")
_SMALL_MATRICES = ("att.key",)
#: the token-shift exponents (times r10) of the time mix's groups
_SHIFT_POWER = {"r": 0.2, "w": 0.9, "k": 0.7, "v": 0.7, "a": 0.9, "g": 0.2}


def _ortho_(p: torch.Tensor, scale: float) -> None:
    """RWKV-LM's `ortho_init` of a 2-D LoRA matrix: orthogonal, gain scale (· sqrt(rows/cols)
    when rows > cols)."""
    rows, cols = p.shape
    gain = math.sqrt(rows / cols) if rows > cols else 1.0
    nn.init.orthogonal_(p, gain=gain * scale)


@torch.no_grad()
def init_goose_time_mix_(att: nn.Module, n_layer: int) -> None:
    """Schedules and LoRAs of one Goose time-mix module (`TimeMixGoose`)."""
    l = att.layer_id
    r01 = l / (n_layer - 1) if n_layer > 1 else 0.0
    r10 = 1.0 - l / n_layer
    C, N = att.receptance.in_features, att.head_size
    dev = att.receptance.weight.device
    ddd = channel_ratio(C, dev)  # [1, 1, C]
    for group, power in _SHIFT_POWER.items():
        getattr(att, f"x_{group}").copy_(1.0 - ddd ** (power * r10))
    n = torch.arange(C, device=dev, dtype=torch.float32)
    linear = n / (C - 1) - 0.5 if C > 1 else torch.zeros_like(n)
    half = (N - 1) / 2
    zigzag = ((n % N) - half) / half if N > 1 else torch.zeros_like(n)
    zigzag = zigzag * zigzag.abs()
    www = -6 + 6 * (n / max(C - 1, 1)) ** (1 + r01 ** 0.3)
    att.w0.copy_((www + 0.5 + zigzag * 2.5).view_as(att.w0))
    att.a0.copy_((-0.19 + zigzag * 0.3 + linear * 0.4).view_as(att.a0))
    if hasattr(att, "v0"):
        att.v0.copy_((0.73 - linear * 0.4).view_as(att.v0))
    att.k_k.copy_((0.71 - linear * 0.1).view_as(att.k_k))
    att.k_a.fill_(1.02)
    att.r_k.fill_(-0.04)
    for lora in ("w", "a", "v", "g"):
        if hasattr(att, f"{lora}1"):
            getattr(att, f"{lora}1").zero_()
            _ortho_(getattr(att, f"{lora}2"), 0.1)


@torch.no_grad()
def init_goose_(model: nn.Module, emb_scale: float = 1e-4) -> None:
    """Initialise every parameter of a `Goose` model (or of an encoder of its blocks) in place."""
    L = len(model.blocks)
    for block in model.blocks:
        init_goose_time_mix_(block.att, L)
        r10 = 1.0 - block.ffn.layer_id / L
        block.ffn.x_k.copy_(1.0 - channel_ratio(block.ffn.x_k.shape[-1], block.ffn.x_k.device) ** (r10 ** 4))
    init_norms_and_matrices_(model, zero=_ZERO_MATRICES, small=_SMALL_MATRICES, emb_scale=emb_scale)
