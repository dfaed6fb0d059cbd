"""GOLD: GoldFinch's attention layer over the shared compressed key cache (paper §3.2–3.3).

A GOLD layer has no key or value projection of its own. Its keys come from the one key cache
that the Finch-C2 stack wrote (decompressed, see `key_cache.py`), its values from x0 = ln0(emb)
of the cached token ids; both get a data-dependent token shift and a residual LoRA, then a
LayerNorm. The query is the usual ddlerp-shifted input through `query` and a LayerNorm.
Causal softmax attention (torch SDPA, H = D / head_size heads, no positional encoding unless
`rope_base` is set), then a LayerNorm and `output`.

Parameter names follow the GoldFinch code (`time_maa_q`, `time_maa_kv_w1`, `time_key_w1`, ...).

Encoders (AudioRWKV) use the same layer non-causally: `mix_keys_values` and `forward` take the
"other token" inputs of their lerps (Q-Shift in place of the token shift) and `causal=False`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RWKVConfig
from ..linear import Linear
from ..time_mix import token_shift


def rms_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / (RMS(x) + eps) over the last dim (the GoldFinch code's parameter-free rms_norm)."""
    return x / (x.norm(2, dim=-1, keepdim=True) * x.shape[-1] ** -0.5 + eps)


def apply_rope(x: torch.Tensor, pos0: int, base: float) -> torch.Tensor:
    """Rotary position embedding of x [B, H, S, N] at absolute positions pos0 .. pos0+S-1.

    Channel pairs (2i, 2i+1) rotate by angle pos·base^(-2i/N), as the GoldFinch code's
    complex-number form does. Computed in fp32, returned in x's dtype."""
    B, H, S, N = x.shape
    freq = base ** -(torch.arange(0, N, 2, device=x.device, dtype=torch.float32) / N)  # [N/2]
    pos = torch.arange(pos0, pos0 + S, device=x.device, dtype=torch.float32)
    angle = torch.outer(pos, freq)  # [S, N/2]
    cos, sin = angle.cos(), angle.sin()
    pairs = x.float().view(B, H, S, N // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)  # [B, H, S, N/2, 2]
    return out.view(B, H, S, N).to(x.dtype)


def causal_mask(n_query: int, n_key: int, device: torch.device) -> torch.Tensor:
    """Boolean [n_query, n_key] mask for queries that are the *last* n_query of n_key positions:
    query i (absolute position n_key - n_query + i) sees keys 0 .. n_key - n_query + i."""
    q_pos = torch.arange(n_key - n_query, n_key, device=device)
    return torch.arange(n_key, device=device)[None, :] <= q_pos[:, None]


class GoldAttention(nn.Module):
    """The GOLD time mix: attention of the current queries over keys/values rebuilt from the
    compressed cache. Per-sequence state: x_prev [B, D] (the query's token shift)."""

    def __init__(self, config: RWKVConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_head = config.n_head
        self.head_size = config.head_size
        self.rope_base = config.rope_base
        D, R, Rv = config.n_embd, config.tm_lora_rank, config.gold_lora_rank
        eps = config.layer_norm_eps
        for name in ("x", "q", "v_cache", "k", "v"):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.empty(1, 1, D)))
        self.time_maa_q_w1 = nn.Parameter(torch.empty(D, R))
        self.time_maa_q_w2 = nn.Parameter(torch.empty(R, D))
        self.time_maa_kv_w1 = nn.Parameter(torch.empty(D, 2 * R))
        self.time_maa_kv_w2 = nn.Parameter(torch.empty(2, R, D))
        self.time_key_w1 = nn.Parameter(torch.empty(D, Rv))
        self.time_key_w2 = nn.Parameter(torch.empty(Rv, D))
        self.time_value_w1 = nn.Parameter(torch.empty(D, Rv))
        self.time_value_w2 = nn.Parameter(torch.empty(Rv, D))
        self.query = Linear(D, D, bias=False)
        self.output = Linear(D, D, bias=False)
        self.ln_q = nn.LayerNorm(D, eps=eps)
        self.ln_k = nn.LayerNorm(D, eps=eps)
        self.ln_v = nn.LayerNorm(D, eps=eps)
        self.ln_x = nn.LayerNorm(D, eps=eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, D] -> [B, H, S, N]."""
        B, S, _ = x.shape
        return x.view(B, S, self.n_head, self.head_size).transpose(1, 2)

    def keys_values(self, keys: torch.Tensor, x0: torch.Tensor, prev_key: torch.Tensor,
                    prev_x0: torch.Tensor, pos0: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a span of positions pos0 .. pos0+S-1.

        Args:
            keys: decompressed key cache of the span [B, S, D].
            x0: ln0(embedding) of the span's tokens [B, S, D].
            prev_key, prev_x0: the same at position pos0 - 1, [B, D] (zeros when pos0 = 0).
            pos0: absolute position of the span's first token (for RoPE).
        Returns:
            (k, v), each [B, H, S, N]: LayerNormed (and, with RoPE, rotated) keys and values.
        """
        xo = rms_norm(x0)
        return self.mix_keys_values(keys, xo, token_shift(keys, prev_key),
                                    token_shift(xo, rms_norm(prev_x0)), pos0)

    def mix_keys_values(self, keys: torch.Tensor, xo: torch.Tensor, keys_other: torch.Tensor,
                        xo_other: torch.Tensor, pos0: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values from keys [B, S, D] and xo = rms_norm(x0) [B, S, D], each lerped
        toward its "other token" input [B, S, D] (the token shift; Q-Shift in encoders).
        Returns (k, v), each [B, H, S, N]."""
        B, S, D = keys.shape
        dxo = xo_other - xo  # [B, S, D]
        xxx = torch.addcmul(xo, dxo, self.time_maa_v_cache)
        lora = torch.tanh(xxx @ self.time_maa_kv_w1).view(B * S, 2, -1).transpose(0, 1)  # [2, BS, R]
        mk, mv = torch.bmm(lora, self.time_maa_kv_w2).view(2, B, S, D).unbind(0)
        dk = keys_other - keys
        k = torch.addcmul(keys, dk, self.time_maa_k + mk)
        v = torch.addcmul(xo, dxo, self.time_maa_v + mv)
        k = k + torch.tanh(k @ self.time_key_w1) @ self.time_key_w2
        v = v + torch.tanh(v @ self.time_value_w1) @ self.time_value_w2
        k, v = self._heads(self.ln_k(k)), self._heads(self.ln_v(v))
        if self.rope_base is not None:
            k = apply_rope(k, pos0, self.rope_base)
        return k, v

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
                shifted: torch.Tensor | None = None, causal: bool = True):
        """Attention of T queries, the last T of the S positions in k/v.

        x: normed input [B, T, D]; x_prev: [B, D]; k, v: [B, H, S, N] with S >= T.
        `shifted` [B, T, D] replaces the token shift of the query's lerp (x_prev then unused);
        `causal=False` lets every query see all S = T positions (encoders).
        Returns (output [B, T, D], new x_prev [B, D]).
        """
        B, T, D = x.shape
        S = k.shape[2]
        if S < T or (not causal and S != T):
            raise ValueError(f"GOLD attention: {T} queries over {S} keys "
                             f"({'causal: S >= T' if causal else 'non-causal: S == T'} needed)")
        dx = (token_shift(x, x_prev) if shifted is None else shifted) - x
        xxx = torch.addcmul(x, dx, self.time_maa_x)
        mq = torch.tanh(xxx @ self.time_maa_q_w1) @ self.time_maa_q_w2
        xq = torch.addcmul(x, dx, self.time_maa_q + mq)
        q = self._heads(self.ln_q(self.query(xq)))  # [B, H, T, N]
        if self.rope_base is not None:
            q = apply_rope(q, S - T, self.rope_base)
        if T == 1 or not causal:
            y = F.scaled_dot_product_attention(q, k, v)
        elif T == S:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # queries at the end of a longer context: bottom-right aligned causal mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, x.device))
        y = self.ln_x(y.transpose(1, 2).reshape(B, T, D))
        return self.output(y), x[:, -1].clone()  # clone: a view would keep all of x alive
