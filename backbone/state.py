"""Recurrent state of an RWKV model: what carries one sequence from one call to the next."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import RWKVConfig


@dataclass
class RWKVState:
    """Per-layer recurrent state, one entry per block (Eagle, Finch and Goose).

    att_x: last (normed) input of each time-mix block, [B, D] each.
    wkv: WKV matrix state, [B, H, N, N] fp32 each: Eagle/Finch key index first
        (S[b, h, key, value]); Goose value index first (S[b, h, value, key]), as BlinkDL's
        runtime stores each. Goose's value residual (v_first) is per position of a call, not
        state.
    ffn_x: last (normed) input of each channel-mix block, [B, D] each.
    """

    att_x: list[torch.Tensor]
    wkv: list[torch.Tensor]
    ffn_x: list[torch.Tensor]

    @classmethod
    def zeros(cls, config: RWKVConfig, batch_size: int, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> "RWKVState":
        """The state before the first token: all zeros."""
        D, H, N = config.n_embd, config.n_head, config.head_size
        L = config.n_layer
        return cls(
            att_x=[torch.zeros(batch_size, D, device=device, dtype=dtype) for _ in range(L)],
            wkv=[torch.zeros(batch_size, H, N, N, device=device, dtype=torch.float32) for _ in range(L)],
            ffn_x=[torch.zeros(batch_size, D, device=device, dtype=dtype) for _ in range(L)],
        )

    @property
    def batch_size(self) -> int:
        return self.wkv[0].shape[0]

    def numel_per_sequence(self) -> int:
        """Floats held per sequence (paper Eq. 30: L·(2D + D·N))."""
        return sum(t[0].numel() for t in (*self.att_x, *self.wkv, *self.ffn_x))

    def detach(self) -> "RWKVState":
        """The same values, cut from the autograd graph (truncated BPTT between segments)."""
        return self._map(lambda t: t.detach())

    def clone(self) -> "RWKVState":
        """An independent copy."""
        return self._map(lambda t: t.clone())

    def select(self, index: torch.Tensor | list[int]) -> "RWKVState":
        """Rows `index` of the batch (reorder, drop or repeat sequences)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.wkv[0].device)
        return self._map(lambda t: t.index_select(0, idx))

    @classmethod
    def cat(cls, states: list["RWKVState"]) -> "RWKVState":
        """Concatenate states along the batch dimension."""
        return cls(
            att_x=[torch.cat(ts) for ts in zip(*(s.att_x for s in states))],
            wkv=[torch.cat(ts) for ts in zip(*(s.wkv for s in states))],
            ffn_x=[torch.cat(ts) for ts in zip(*(s.ffn_x for s in states))],
        )

    def _map(self, fn) -> "RWKVState":
        return RWKVState([fn(t) for t in self.att_x], [fn(t) for t in self.wkv], [fn(t) for t in self.ffn_x])
