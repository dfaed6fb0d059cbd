"""Initialisation of GoldFinch as the GoldFinch training code does it.

- token-shift μ: Finch's depth/channel power schedules (ddd = i/D, r01 = l/(L-1), r10 = 1 - l/L):
  1 - ddd^r10 for x/k/w (and GOLD's v_cache), 1 - ddd^(r10/2) for r and GOLD's q,
  1 - (ddd^r10 + 0.3·r01) for v and v2;
- Finch-C2 decay ω_n = -6 + 5·(n/(D-1))^(0.7 + 1.3·r01);
- LoRAs: first matrices zero, second U(-0.01, 0.01);
- LayerNorms 1 and 0, except every `att.ln_x` weight = ((l+1)/L)^0.7;
- embedding U(-1e-4, 1e-4); head orthogonal with gain 0.5·sqrt(V/D) (0.5 when V <= D); every
  other matrix orthogonal with gain 1 (att.key 0.1), att.output / ffn.value / ffn.receptance zero.
  (Unlike Eagle/Finch's App. I init, no sqrt(out/in) gain for widening matrices.)
"""

from __future__ import annotations

import torch
from torch import nn

from ..init import channel_ratio, init_channel_mix_, init_norms_and_matrices_

_ZERO_MATRICES = ("att.output", "ffn.value", "ffn.receptance")
_SMALL_MATRICES = ("att.key",)


def _maa(ddd: torch.Tensor, kind: str, r01: float, r10: float) -> torch.Tensor:
    """The μ schedule of one token-shift group ([1, 1, D])."""
    if kind == "half":
        return 1 - ddd ** (0.5 * r10)
    if kind == "value":
        return 1 - (ddd ** r10 + 0.3 * r01)
    return 1 - ddd ** r10


# group name -> schedule kind, for Finch-C2 and GOLD
_MAA_KIND = {"x": "plain", "w": "plain", "k": "plain", "v_cache": "plain", "r": "half", "q": "half",
             "v": "value", "v2": "value"}


@torch.no_grad()
def init_goldfinch_time_mix_(att: nn.Module, n_layer: int) -> None:
    """Schedules and LoRAs of one Finch-C2 or GOLD time-mix module."""
    l = att.layer_id
    r01 = l / (n_layer - 1)
    r10 = 1.0 - l / n_layer
    D = att.output.in_features
    dev = att.output.weight.device
    ddd = channel_ratio(D, dev)
    for name, p in att.named_parameters(recurse=False):
        group = name.removeprefix("time_maa_")
        if group in _MAA_KIND:
            p.copy_(_maa(ddd, _MAA_KIND[group], r01, r10))
        elif name.endswith("_w1"):
            p.zero_()
        elif name.endswith("_w2"):
            p.uniform_(-0.01, 0.01)
        elif name == "time_decay":
            n = torch.arange(D, device=dev, dtype=torch.float32)
            p.copy_((-6 + 5 * (n / max(D - 1, 1)) ** (0.7 + 1.3 * r01)).view_as(p))
        else:
            raise AssertionError(f"init_goldfinch_time_mix_: no rule for {name}")


@torch.no_grad()
def init_goldfinch_(model: nn.Module, emb_scale: float = 1e-4) -> None:
    """Initialise every parameter of a `GoldFinch` model (or of an encoder of its blocks) in place."""
    L = len(model.blocks)
    for block in model.blocks:
        init_goldfinch_time_mix_(block.att, L)
        init_channel_mix_(block.ffn, L)
    init_norms_and_matrices_(model, zero=_ZERO_MATRICES, small=_SMALL_MATRICES, emb_scale=emb_scale)
