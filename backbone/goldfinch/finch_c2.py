"""Finch-C2: the time mix of GoldFinch's lower layers (GoldFinch paper §3.1).

Finch (x060) with four changes, each a parameter of the Finch code rather than a copy of it:
- no output gate, and a full-width LayerNorm instead of the per-head GroupNorm;
- no current-token bonus u: instead a second value v2 = value(x_v2) + tanh(x_v2 A) B (rank 64,
  sharing the `value` matrix) is added to the WKV output;
- the key is scaled by (1 - w_t), the fraction the decay w_t = exp(-exp(ω_t)) lets go;
- the ddlerp LoRA mixes r, k, v, w and v2 (in that slot order).

Parameter names are the GoldFinch code's (`time_maa_v2`, `time_value2_w1`, `time_value2_w2`).
As Eagle/Finch, `bidirectional=True` (encoders: AudioRWKV) reads the whole sequence through
`wkv_bidirectional` and keeps no state, and `shifted` replaces the token shift (Q-Shift).
"""

from __future__ import annotations

import torch
from torch import nn

from rwkv_mm.kernels.wkv import wkv
from rwkv_mm.kernels.wkv_bidirectional import wkv_bidirectional

from ..config import RWKVConfig
from ..time_mix import TimeMixFinch, token_shift


class TimeMixFinchC2(TimeMixFinch):
    """Finch-C2 time mix. State per sequence as Finch: x_prev [B, D] and WKV [B, H, N, N]."""

    mix_groups = ("r", "k", "v", "w", "v2")

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False) -> None:
        super().__init__(config, layer_id, bidirectional, head_norm=False, bonus=False)
        if self.gate is not None:
            raise ValueError("Finch-C2 has no gate: build it from a GoldFinch config (gate=False)")
        D, Rd = config.n_embd, config.decay_lora_rank
        self.time_value2_w1 = nn.Parameter(torch.empty(D, Rd))
        self.time_value2_w2 = nn.Parameter(torch.empty(Rd, D))

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, wkv_state: torch.Tensor | None,
                shifted: torch.Tensor | None = None):
        """x: normed input [B, T, D]; x_prev: [B, D]; wkv_state: [B, H, N, N] fp32 (None = zeros).
        `shifted` [B, T, D]: the "other token" input of the ddlerp in place of the token shift.

        Returns (output [B, T, D], new x_prev [B, D], new wkv_state [B, H, N, N] — None when
        bidirectional).
        """
        B, T, D = x.shape
        H, N = self.n_head, self.head_size
        if self.bidirectional and wkv_state is not None:
            raise ValueError("a bidirectional time mix keeps no state: pass wkv_state=None")
        m = self._ddlerp(x, token_shift(x, x_prev) if shifted is None else shifted)
        log_w = self._log_decay(m["w"])  # [B, T, D] fp32, log of the per-step decay
        r = self.receptance(m["r"]).view(B, T, H, N)
        k = self.key(m["k"]) * (-torch.expm1(log_w)).to(x.dtype)  # k·(1 - w)
        k = k.view(B, T, H, N)
        v = self.value(m["v"]).view(B, T, H, N)
        xv2 = m["v2"]
        v2 = self.value(xv2) + torch.tanh(xv2 @ self.time_value2_w1) @ self.time_value2_w2  # [B, T, D]
        log_w = log_w.view(B, T, H, N)
        no_bonus = torch.zeros(H, N, device=x.device, dtype=x.dtype)  # u = 0: v2 takes its role
        if self.bidirectional:
            y, new_state = wkv_bidirectional(r, k, v, log_w, no_bonus), None
        else:  # the kernels' dispatch runs the decode step for T = 1
            y, new_state = wkv(r, k, v, log_w, no_bonus, wkv_state)
        y = self.ln_x(y.reshape(B, T, D) + v2)
        return self.output(y), x[:, -1].clone(), new_state  # clone: a view would keep all of x alive
