"""Goose (RWKV-7, x070) time mix: the generalised delta rule with vector decay, an in-context
learning rate and a value residual (arXiv 2503.14456; BlinkDL's `rwkv` runtime, RWKV_V7_ON=1).

Parameter names and shapes are the official checkpoints' (`blocks.i.att.*`). Per token, from the
normed input x and its token-shift neighbour x' (lerps x + (x' - x)·μ with μ = x_r ... x_g):

    r = W_r x_r                 k = W_k x_k                 v = W_v x_v
    w = -e^{-0.5}·σ(w0 + tanh(x_w W1) W2)                   (log decay, per channel, fp32)
    a = σ(a0 + x_a A1 A2)                                   (in-context learning rate)
    v ← v + (v_first - v)·σ(v0 + x_v V1 V2)                 (layers > 0; layer 0 sets v_first = v)
    g = σ(x_g G1) G2                                        (output gate, no bias)
    κ̂ = L2-normalise_per_head(k ⊙ k_k);   k ← k ⊙ (1 + (a - 1) ⊙ k_a)
    S_t = S_{t-1} (diag(e^w) - κ̂ᵀ(a ⊙ κ̂)) + vᵀk,  y = S_t r   (`wkv7` with a = -κ̂, b = κ̂ ⊙ a)
    out = W_o ((GroupNorm_H(y) + ((r ⊙ k ⊙ r_k)·1) v) ⊙ g)   (bonus summed per head)

The state S is [B, H, N, N] with the *value* index first, as the runtime stores it.

Bidirectional (encoders): y = S_t r_t of the forward scan + the same op over the time-reversed
sequence, minus the current token's write v_t (k_t·r_t) that both scans contain. Unlike Eagle and
Finch, the current token does not enter through a separate bonus inside the op that one scan can
drop: its write is part of the state each scan reads (y_t = S_t r_t, after the update), and the
delta rule's erasure (-S κ̂ᵀ(a κ̂)) makes the state depend on the order of every earlier write, so
neither scan is a sum of independent per-token terms. Subtracting the write keeps what the
reversed scan's state held *before* token t was written but after its own transition (decay and
erasure by κ̂_t): S'_{t+1} G_t r_t, the mirror image of the forward scan's S_{t-1} G_t r_t. So the
non-causal output is y_t = S_{t-1} G_t r_t + v_t (k_t·r_t) + S'_{t+1} G_t r_t: every other token
reaches t through the query's own transition on both sides, the current token is written once,
and reversing the sequence reverses the output (for a mirror-symmetric token shift). The bonus
term is added once, outside both scans, as in the causal block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_mm.kernels.contract import compute_dtype
from rwkv_mm.kernels.wkv import wkv7

from ..config import RWKVConfig
from ..linear import Linear
from ..time_mix import token_shift

#: e^{-0.5}: the largest per-step log decay magnitude (w = -e^{-0.5}·σ(·), decays in (0.545, 1)).
DECAY_SCALE = math.exp(-0.5)

#: the token-shift groups, in the order of the official keys `att.x_<group>`
MIX_GROUPS = ("r", "w", "k", "v", "a", "g")


def wkv7_bidirectional(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Non-causal WKV-7 over [B, T, H, N] inputs (see the module docstring): the forward scan,
    plus the scan over the reversed sequence, minus the current token's write v_t (k_t·r_t)
    counted by both. Returns y [B, T, H, N] in r's dtype (the sum in fp32, fp64 for fp64 inputs)."""
    dt = compute_dtype(r, w, k, v, a, b)
    y_fwd, _ = wkv7(r, w, k, v, a, b)  # [B, T, H, N]
    y_rev, _ = wkv7(*(x.flip(1) for x in (r, w, k, v, a, b)))
    write = (r.to(dt) * k.to(dt)).sum(-1, keepdim=True) * v.to(dt)  # v_t (k_t·r_t)
    return (y_fwd.to(dt) + y_rev.flip(1).to(dt) - write).to(r.dtype)


class TimeMixGoose(nn.Module):
    """RWKV-7 time mix of block `layer_id` (see the module docstring).

    `bidirectional=True` makes it non-causal for encoders: no recurrent state, both scans.
    Layer 0 has no value-residual LoRA (`v0/v1/v2`): it produces v_first instead.
    """

    def __init__(self, config: RWKVConfig, layer_id: int, bidirectional: bool = False) -> None:
        super().__init__()
        if not config.is_goose:  # a bug in the caller
            raise ValueError(f"TimeMixGoose needs version '7', got {config.version!r}")
        self.layer_id = layer_id
        self.bidirectional = bidirectional
        self.n_head, self.head_size = config.n_head, config.head_size
        D, H, N = config.n_embd, config.n_head, config.head_size
        for group in MIX_GROUPS:
            setattr(self, f"x_{group}", nn.Parameter(torch.empty(1, 1, D)))
        self.w0 = nn.Parameter(torch.empty(1, 1, D))
        self.w1 = nn.Parameter(torch.empty(D, config.w_lora_rank))
        self.w2 = nn.Parameter(torch.empty(config.w_lora_rank, D))
        self.a0 = nn.Parameter(torch.empty(1, 1, D))
        self.a1 = nn.Parameter(torch.empty(D, config.a_lora_rank))
        self.a2 = nn.Parameter(torch.empty(config.a_lora_rank, D))
        if layer_id > 0:
            self.v0 = nn.Parameter(torch.empty(1, 1, D))
            self.v1 = nn.Parameter(torch.empty(D, config.v_lora_rank))
            self.v2 = nn.Parameter(torch.empty(config.v_lora_rank, D))
        self.g1 = nn.Parameter(torch.empty(D, config.g_lora_rank))
        self.g2 = nn.Parameter(torch.empty(config.g_lora_rank, D))
        self.k_k = nn.Parameter(torch.empty(1, 1, D))
        self.k_a = nn.Parameter(torch.empty(1, 1, D))
        self.r_k = nn.Parameter(torch.empty(H, N))
        self.receptance = Linear(D, D, bias=False)
        self.key = Linear(D, D, bias=False)
        self.value = Linear(D, D, bias=False)
        self.output = Linear(D, D, bias=False)
        self.ln_x = nn.GroupNorm(H, D, eps=config.group_norm_eps)  # 64e-5 with the default divisor

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, wkv_state: torch.Tensor | None,
                v_first: torch.Tensor | None, shifted: torch.Tensor | None = None):
        """x: normed input [B, T, D]; x_prev [B, D]; wkv_state [B, H, N, N] fp32 (value index
        first); v_first [B, T, D]: layer 0's values at the same positions (None for layer 0).

        `shifted` [B, T, D] replaces the token shift (encoders: Q-Shift; x_prev may then be None).
        Returns (output [B, T, D], new x_prev [B, D], new wkv_state, v_first [B, T, D]); the
        state is None for a bidirectional module.
        """
        B, T, D = x.shape
        H, N = self.n_head, self.head_size
        if self.bidirectional and wkv_state is not None:
            raise ValueError("a bidirectional time mix keeps no state: pass wkv_state=None")
        if self.layer_id > 0 and v_first is None:
            raise ValueError(f"Goose layer {self.layer_id} needs v_first (layer 0's values)")
        if shifted is None:
            shifted = token_shift(x, x_prev)
        mu = torch.stack([getattr(self, f"x_{g}") for g in MIX_GROUPS]).view(len(MIX_GROUPS), 1, 1, D)
        xr, xw, xk, xv, xa, xg = torch.addcmul(x, shifted - x, mu).unbind(0)  # [B, T, D] each
        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        log_w = -DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        iclr = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)  # a: in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kappa = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)  # κ̂ [B, T, H, N]
        k = k * (1 + (iclr - 1) * self.k_a)
        heads = [t.view(B, T, H, N) for t in (r, k, v, iclr)]
        r4, k4, v4, a4 = heads
        w4 = log_w.view(B, T, H, N)
        if self.bidirectional:
            y, new_state = wkv7_bidirectional(r4, w4, k4, v4, -kappa, kappa * a4), None
        else:  # the kernels' dispatch runs the decode step for T = 1
            y, new_state = wkv7(r4, w4, k4, v4, -kappa, kappa * a4, wkv_state)
        y = self.ln_x(y.reshape(B * T, D)).view(B, T, D)
        bonus = (r4 * k4 * self.r_k).sum(-1, keepdim=True) * v4  # [B, T, H, N]
        y = (y + bonus.view(B, T, D)) * g
        return self.output(y), x[:, -1].clone(), new_state, v_first  # clone: no view keeps x alive
