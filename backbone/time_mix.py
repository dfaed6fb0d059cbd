"""Time mixing (the attention replacement) of Eagle (x052) and Finch (x060).

Parameter names and shapes are the official checkpoints' (`blocks.i.att.*`), so a state dict of
these modules is the official layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_mm.kernels.wkv import wkv, wkv_step
from rwkv_mm.kernels.wkv_bidirectional import wkv_bidirectional

from .config import RWKVConfig
from .linear import Linear


def token_shift(x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
    """The previous token's vector at every position: [x_prev, x_0, ..., x_{T-2}].

    x: [B, T, D]; x_prev: [B, D] (the last token of the previous call). Returns [B, T, D].
    """
    if x.shape[1] == 1:
        return x_prev.unsqueeze(1)
    return torch.cat((x_prev.unsqueeze(1), x[:, :-1]), dim=1)


class _TimeMixBase(nn.Module):
    """Projections, GroupNorm and the WKV call shared by Eagle and Finch.

    `bidirectional=True` makes the mixing non-causal for encoders (AudioRWKV): every token reads
    the whole sequence through `wkv_bidirectional` (forward scan with the bonus + backward scan
    without it) and no recurrent state is kept.
    """

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.bidirectional = bidirectional
        self.n_head = config.n_head
        self.head_size = config.head_size
        D = config.n_embd
        self.receptance = Linear(D, D, bias=False)
        self.key = Linear(D, D, bias=False)
        self.value = Linear(D, D, bias=False)
        self.output = Linear(D, D, bias=False)
        self.gate = Linear(D, D, bias=False) if config.gate else None
        self.ln_x = nn.GroupNorm(config.n_head, D, eps=config.group_norm_eps)
        self.time_faaaa = nn.Parameter(torch.empty(config.n_head, config.head_size))  # u: [H, N]

    def _mix_inputs(self, x: torch.Tensor, shifted: torch.Tensor):
        """Returns (xr, xk, xv, xg, log_decay) for the architecture; log_decay [B, T, H, N] fp32."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, wkv_state: torch.Tensor | None,
                shifted: torch.Tensor | None = None):
        """x: normed input [B, T, D]; x_prev: [B, D]; wkv_state: [B, H, N, N] fp32.

        `shifted` [B, T, D] replaces the token shift as the "other token" input of the
        lerp/ddlerp (encoders pass Q-Shift's output; x_prev is then unused and may be None).
        Returns (output [B, T, D], new x_prev [B, D], new wkv_state [B, H, N, N]); the
        state is None for a bidirectional module.
        """
        B, T, D = x.shape
        H, N = self.n_head, self.head_size
        if shifted is None:
            shifted = token_shift(x, x_prev)
        xr, xk, xv, xg, log_w = self._mix_inputs(x, shifted)
        r = self.receptance(xr).view(B, T, H, N)
        k = self.key(xk).view(B, T, H, N)
        v = self.value(xv).view(B, T, H, N)
        if self.bidirectional:
            if wkv_state is not None:
                raise ValueError("a bidirectional time mix keeps no state: pass wkv_state=None")
            y, new_state = wkv_bidirectional(r, k, v, log_w, self.time_faaaa), None
        elif T == 1:
            y, new_state = wkv_step(r[:, 0], k[:, 0], v[:, 0], log_w[:, 0], self.time_faaaa, wkv_state)
        else:
            y, new_state = wkv(r, k, v, log_w, self.time_faaaa, wkv_state)
        y = self.ln_x(y.reshape(B * T, D)).view(B, T, D)
        if self.gate is not None:
            y = y * F.silu(self.gate(xg))
        return self.output(y), x[:, -1], new_state


class TimeMixEagle(_TimeMixBase):
    """RWKV-5.2 (Eagle) time mix: lerp token shift, static per-channel decay w = exp(-exp(ω))."""

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False) -> None:
        super().__init__(config, layer_id, bidirectional)
        D = config.n_embd
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, D))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, D))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, D))
        self.time_mix_g = nn.Parameter(torch.empty(1, 1, D)) if config.gate else None
        self.time_decay = nn.Parameter(torch.empty(config.n_head, config.head_size))  # ω: [H, N]

    def _mix_inputs(self, x: torch.Tensor, shifted: torch.Tensor):
        # Eagle's lerp weights the *current* token: x·μ + x_prev·(1-μ).
        names = ("time_mix_k", "time_mix_v", "time_mix_r") + (("time_mix_g",) if self.gate is not None else ())
        mu = torch.stack([getattr(self, n) for n in names]).view(len(names), 1, 1, -1)
        mixed = torch.addcmul(shifted, x - shifted, mu).unbind(0)  # [B, T, D] each
        xk, xv, xr = mixed[:3]
        xg = mixed[3] if self.gate is not None else None
        B, T, _ = x.shape
        log_w = -torch.exp(self.time_decay.float())  # [H, N]
        return xr, xk, xv, xg, log_w.expand(B, T, *log_w.shape)


class TimeMixFinch(_TimeMixBase):
    """RWKV-6 (Finch) time mix: ddlerp token shift (LoRA, 5 groups) and data-dependent decay."""

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False) -> None:
        super().__init__(config, layer_id, bidirectional)
        D, R, Rd = config.n_embd, config.tm_lora_rank, config.decay_lora_rank
        for name in ("x", "w", "k", "v", "r", "g"):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.empty(1, 1, D)))
        self.time_maa_w1 = nn.Parameter(torch.empty(D, 5 * R))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, R, D))
        self.time_decay = nn.Parameter(torch.empty(1, 1, D))
        self.time_decay_w1 = nn.Parameter(torch.empty(D, Rd))
        self.time_decay_w2 = nn.Parameter(torch.empty(Rd, D))

    def _mix_inputs(self, x: torch.Tensor, shifted: torch.Tensor):
        # Finch's maa weights the *previous* token: x + (x_prev - x)·(μ + LoRA(x)).
        B, T, D = x.shape
        delta = shifted - x  # [B, T, D]
        xxx = torch.addcmul(x, delta, self.time_maa_x)
        lora = torch.tanh(xxx @ self.time_maa_w1).view(B * T, 5, -1).transpose(0, 1)  # [5, BT, R]
        mix = torch.bmm(lora, self.time_maa_w2).view(5, B, T, D)  # [5, B, T, D]: w, k, v, r, g
        mu = torch.stack([self.time_maa_w, self.time_maa_k, self.time_maa_v, self.time_maa_r,
                          self.time_maa_g]).view(5, 1, 1, D)
        xw, xk, xv, xr, xg = torch.addcmul(x, delta, mix + mu).unbind(0)  # one pass for all five
        ww = torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2  # [B, T, D]
        log_w = -torch.exp((self.time_decay + ww).float())
        return xr, xk, xv, xg, log_w.view(B, T, self.n_head, self.head_size)
