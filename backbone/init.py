"""Initialisation of Eagle / Finch per the paper's Appendix I (as in RWKV-LM's trainer).

- token-shift μ: per-channel power schedules that depend on depth (ddd = i/D);
- decay ω_n = -6 + 5·(n/(D-1))^(0.7 + 1.3·l/(L-1)); bonus u_n = l/(L-1)·(1 - n/(D-1)) + ((n+1) mod 3 - 1)·0.1;
- Finch LoRAs: first matrices zero, second U(-0.01, 0.01);
- embedding U(-s, s) with s = emb_scale (RWKV-LM uses the max learning rate); head orthogonal with
  gain 0.5·sqrt(V/D) (0.5 when V <= D); other matrices orthogonal (gain sqrt(out/in) when out > in),
  att.key and att.gate scaled by 0.1, att.output / ffn.value / ffn.receptance zero; norms 1 and 0.

`init_norms_and_matrices_` is the matrix and norm part of RWKV-LM's later `generate_init_weight`
(GoldFinch's and Goose's codes), shared by those families' initialisations.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_ZERO_MATRICES = ("att.output", "ffn.value", "ffn.receptance")
_SMALL_MATRICES = ("att.key", "att.gate")


def channel_ratio(D: int, device) -> torch.Tensor:
    """ddd[0, 0, i] = i / D, shape [1, 1, D]."""
    return (torch.arange(D, device=device, dtype=torch.float32) / D).view(1, 1, D)


@torch.no_grad()
def init_time_mix_(att: nn.Module, n_layer: int) -> None:
    """Token-shift, decay and bonus schedules of one time-mix module (Eagle or Finch)."""
    l = att.layer_id
    r01 = l / (n_layer - 1) if n_layer > 1 else 0.0  # 0 → 1 over depth
    r10 = 1.0 - l / n_layer  # 1 → ~0 over depth
    D = att.receptance.in_features
    dev = att.receptance.weight.device
    ddd = channel_ratio(D, dev)
    n = torch.arange(D, device=dev, dtype=torch.float32)
    decay = -6 + 5 * (n / max(D - 1, 1)) ** (0.7 + 1.3 * r01)
    bonus = r01 * (1 - n / max(D - 1, 1)) + ((n + 1) % 3 - 1) * 0.1
    att.time_faaaa.copy_(bonus.view_as(att.time_faaaa))
    att.time_decay.copy_(decay.view_as(att.time_decay))
    if hasattr(att, "time_maa_x"):  # Finch: μ weights the previous token → 1 - Eagle's schedule
        att.time_maa_x.copy_(1 - ddd ** r10)
        att.time_maa_w.copy_(1 - ddd ** r10)
        att.time_maa_k.copy_(1 - ddd ** r10)
        att.time_maa_v.copy_(1 - (ddd ** r10 + 0.3 * r01))
        att.time_maa_r.copy_(1 - ddd ** (0.5 * r10))
        att.time_maa_g.copy_(1 - ddd ** (0.5 * r10))
        att.time_maa_w1.zero_()
        att.time_maa_w2.uniform_(-0.01, 0.01)
        att.time_decay_w1.zero_()
        att.time_decay_w2.uniform_(-0.01, 0.01)
    else:
        att.time_mix_k.copy_(ddd ** r10)
        att.time_mix_v.copy_(ddd ** r10 + 0.3 * r01)
        att.time_mix_r.copy_(ddd ** (0.5 * r10))
        if att.time_mix_g is not None:
            att.time_mix_g.copy_(ddd ** (0.5 * r10))


@torch.no_grad()
def init_channel_mix_(ffn: nn.Module, n_layer: int) -> None:
    """Token-shift schedule of one channel-mix module."""
    r10 = 1.0 - ffn.layer_id / n_layer
    ddd = channel_ratio(ffn.receptance.in_features, ffn.receptance.weight.device)
    mix = ddd ** r10
    for name in ffn.mix_names:
        getattr(ffn, name).copy_(1 - mix if ffn.finch else mix)


@torch.no_grad()
def init_rwkv_(model: nn.Module, emb_scale: float = 1e-4) -> None:
    """Initialise every parameter of an `RWKV` model (or of an encoder of Eagle/Finch blocks) in
    place (paper App. I)."""
    n_layer = len(model.blocks)
    for block in model.blocks:
        init_time_mix_(block.att, n_layer)
        init_channel_mix_(block.ffn, n_layer)
    for name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -emb_scale, emb_scale)
        elif isinstance(module, nn.Linear):
            out_f, in_f = module.weight.shape
            if name == "head":
                gain = 0.5 * math.sqrt(out_f / in_f) if out_f > in_f else 0.5
                nn.init.orthogonal_(module.weight, gain=gain)
            elif any(name.endswith(z) for z in _ZERO_MATRICES):
                nn.init.zeros_(module.weight)
            else:
                gain = math.sqrt(out_f / in_f) if out_f > in_f else 1.0
                if any(name.endswith(s) for s in _SMALL_MATRICES):
                    gain *= 0.1
                nn.init.orthogonal_(module.weight, gain=gain)


@torch.no_grad()
def init_norms_and_matrices_(model: nn.Module, zero: tuple[str, ...], small: tuple[str, ...],
                             emb_scale: float = 1e-4) -> None:
    """The matrix and norm part of RWKV-LM's `generate_init_weight` as the GoldFinch and x070
    codes run it (unlike App. I: no sqrt(out/in) gain for widening matrices, and a depth scale
    on the WKV output norm), over every module of `model` in place:

    LayerNorm/GroupNorm weight 1, bias 0, except each `blocks.<l>.att.ln_x` weight = ((l+1)/L)^0.7;
    embedding U(-emb_scale, emb_scale); `head` orthogonal with gain 0.5·sqrt(V/D) (0.5 when
    V <= D); every other Linear orthogonal with gain 1, 0.1 when its name ends with one of
    `small`, zero when it ends with one of `zero`."""
    L = len(model.blocks)
    for name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if name.endswith("att.ln_x"):
                layer = int(name.split(".")[1])
                module.weight.fill_(((layer + 1) / L) ** 0.7)
        elif isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -emb_scale, emb_scale)
        elif isinstance(module, nn.Linear):
            out_f, in_f = module.weight.shape
            if name == "head":
                nn.init.orthogonal_(module.weight, gain=0.5 * math.sqrt(out_f / in_f) if out_f > in_f else 0.5)
            elif name.endswith(zero):
                nn.init.zeros_(module.weight)
            else:
                nn.init.orthogonal_(module.weight, gain=0.1 if name.endswith(small) else 1.0)
