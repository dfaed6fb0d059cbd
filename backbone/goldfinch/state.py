"""What carries a GoldFinch sequence from one call to the next: a fixed-size RNN state plus the
compressed key cache, which grows by one token id and `key_cache_dim` (= D/16) numbers per token.

GOLD layers rebuild their keys from the compressed cache and their values from x0 = ln0(emb) of
the stored token ids. Rebuilding everything at every decoding step is the smallest form; by
default the state also keeps each GOLD layer's finished keys and values (`kv_memo`) so a decoding
step only computes the new token's. `compact()` drops that memo (the model rebuilds it on the
next call), which is what the cache-size claims of the paper count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import RWKVConfig

KV = tuple[torch.Tensor, torch.Tensor]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class GoldFinchState:
    """Per-sequence state of a GoldFinch model (batch of B sequences, T tokens so far).

    att_x: last (normed) time-mix input of every layer, L entries [B, D].
    ffn_x: last (normed) channel-mix input of every layer, L entries [B, D].
    wkv: WKV state of each Finch-C2 layer, s entries [B, H, N, N] fp32.
    context: what was fed, in order: token-id pieces [B, t] (long) and, where a front end passed
        embeddings, embedding pieces [B, t, D]; the GOLD values are rebuilt from these.
    key_cache: the compressed key cache [B, T, key_cache_dim].
    kv_memo: finished keys/values of each GOLD layer, ([B, H, T, N], [B, H, T, N]) per layer,
        or None (then rebuilt from context + key_cache when needed).
    keep_kv_memo: whether calls on this state keep (and extend) the memo.
    """

    att_x: list[torch.Tensor]
    ffn_x: list[torch.Tensor]
    wkv: list[torch.Tensor]
    context: list[torch.Tensor]
    key_cache: torch.Tensor
    kv_memo: list[KV] | None
    keep_kv_memo: bool = True

    @classmethod
    def zeros(cls, config: RWKVConfig, batch_size: int, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32, keep_kv_memo: bool = True) -> "GoldFinchState":
        """The state before the first token: zero shift/WKV states and an empty cache."""
        if not config.is_goldfinch:
            raise ValueError(f"GoldFinchState needs a GoldFinch config, got version {config.version!r}")
        D, H, N, L = config.n_embd, config.n_head, config.head_size, config.n_layer
        B, s = batch_size, config.first_gold_layer

        def vec() -> torch.Tensor:
            return torch.zeros(B, D, device=device, dtype=dtype)

        memo = None
        if keep_kv_memo:
            empty = torch.zeros(B, H, 0, N, device=device, dtype=dtype)
            memo = [(empty, empty) for _ in range(config.n_gold_layer)]
        return cls(
            att_x=[vec() for _ in range(L)],
            ffn_x=[vec() for _ in range(L)],
            wkv=[torch.zeros(B, H, N, N, device=device, dtype=torch.float32) for _ in range(s)],
            context=[],
            key_cache=torch.zeros(B, 0, config.key_cache_dim, device=device, dtype=dtype),
            kv_memo=memo,
            keep_kv_memo=keep_kv_memo,
        )

    @property
    def batch_size(self) -> int:
        return self.key_cache.shape[0]

    @property
    def length(self) -> int:
        """Tokens (positions) held in the cache."""
        return self.key_cache.shape[1]

    def context_embeddings(self, emb: nn.Embedding, last: int | None = None) -> torch.Tensor:
        """Embeddings [B, T, D] of every cached position (or of the `last` ones)."""
        pieces, need = [], self.length if last is None else min(last, self.length)
        for piece in reversed(self.context):
            if need <= 0:
                break
            piece = piece[:, -need:]
            pieces.append(emb(piece) if piece.dim() == 2 else piece)
            need -= piece.shape[1]
        if not pieces:
            return emb.weight.new_zeros(self.batch_size, 0, emb.weight.shape[1])
        return torch.cat(pieces[::-1], dim=1)

    def token_ids(self) -> torch.Tensor | None:
        """All cached token ids [B, T], or None when some positions came as embeddings."""
        if any(p.dim() != 2 for p in self.context):
            return None
        if not self.context:
            return self.key_cache.new_zeros(self.batch_size, 0, dtype=torch.long)
        return torch.cat(self.context, dim=1)

    def with_new_tokens(self, piece: torch.Tensor) -> list[torch.Tensor]:
        """`context` with `piece` appended (merged into the last piece when both are token ids,
        so token-by-token decoding keeps one tensor). Token ids are copied: a caller reusing its
        buffer must not change the cache."""
        if self.context and piece.dim() == 2 and self.context[-1].dim() == 2:
            return [*self.context[:-1], torch.cat((self.context[-1], piece), dim=1)]
        return [*self.context, piece.clone() if piece.dim() == 2 else piece]

    # ---- sizes --------------------------------------------------------------------------------

    def cache_nbytes(self, include_memo: bool = False) -> int:
        """Bytes of the growing part for the whole batch: token ids (and embedding pieces) plus
        the compressed key cache; with `include_memo`, also the GOLD keys/values kept."""
        n = sum(_nbytes(p) for p in self.context) + _nbytes(self.key_cache)
        if include_memo and self.kv_memo is not None:
            n += sum(_nbytes(k) + _nbytes(v) for k, v in self.kv_memo)
        return n

    def fixed_nbytes(self) -> int:
        """Bytes of the fixed-size RNN part (shift states and Finch-C2 WKV states), whole batch."""
        return sum(_nbytes(t) for t in (*self.att_x, *self.ffn_x, *self.wkv))

    # ---- copies -------------------------------------------------------------------------------

    def compact(self) -> "GoldFinchState":
        """The same sequence without the GOLD key/value memo (only ids + compressed keys)."""
        return GoldFinchState(list(self.att_x), list(self.ffn_x), list(self.wkv), list(self.context),
                              self.key_cache, None, keep_kv_memo=False)

    def detach(self) -> "GoldFinchState":
        """The same values, cut from the autograd graph."""
        return self._map(lambda t: t.detach())

    def clone(self) -> "GoldFinchState":
        """An independent copy."""
        return self._map(lambda t: t.clone())

    def select(self, index: torch.Tensor | list[int]) -> "GoldFinchState":
        """Rows `index` of the batch (reorder, drop or repeat sequences)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.key_cache.device)
        return self._map(lambda t: t.index_select(0, idx))

    @classmethod
    def cat(cls, states: list["GoldFinchState"], emb: nn.Embedding | None = None) -> "GoldFinchState":
        """Concatenate states of equally long sequences along the batch dimension.

        The key caches must hold the same number of positions (GOLD attention has no padding
        mask). Where the context pieces do not line up (different id/embedding splits), each
        state's context becomes one embedding piece, which needs `emb` (the model's embedding).
        """
        if not states:
            raise ValueError("GoldFinchState.cat: no states given")
        lengths = sorted({s.length for s in states})
        if len(lengths) > 1:
            raise ValueError(f"GoldFinchState.cat: states hold different numbers of positions "
                             f"{lengths}; only equally long sequences can share a batch")
        memo_kept = {s.kv_memo is not None for s in states}
        contexts = _aligned_contexts(states, emb)
        memo = None
        if memo_kept == {True}:
            memo = [(torch.cat([m[0] for m in ms]), torch.cat([m[1] for m in ms]))
                    for ms in zip(*(s.kv_memo for s in states))]
        return cls(
            att_x=[torch.cat(ts) for ts in zip(*(s.att_x for s in states))],
            ffn_x=[torch.cat(ts) for ts in zip(*(s.ffn_x for s in states))],
            wkv=[torch.cat(ts) for ts in zip(*(s.wkv for s in states))],
            context=[torch.cat(ps) for ps in zip(*contexts)],
            key_cache=torch.cat([s.key_cache for s in states]),
            kv_memo=memo,
            keep_kv_memo=all(s.keep_kv_memo for s in states) and memo is not None,
        )

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "GoldFinchState":
        memo = None if self.kv_memo is None else [(fn(k), fn(v)) for k, v in self.kv_memo]
        return GoldFinchState([fn(t) for t in self.att_x], [fn(t) for t in self.ffn_x],
                              [fn(t) for t in self.wkv], [fn(t) for t in self.context],
                              fn(self.key_cache), memo, self.keep_kv_memo)


def _piece_layout(state: GoldFinchState) -> list[tuple[int, bool]]:
    """(length, is token ids) of every context piece."""
    return [(p.shape[1], p.dim() == 2) for p in state.context]


def _aligned_contexts(states: list[GoldFinchState], emb: nn.Embedding | None) -> list[list[torch.Tensor]]:
    """Every state's context pieces, in one layout shared by all states (see `GoldFinchState.cat`)."""
    if all(_piece_layout(s) == _piece_layout(states[0]) for s in states):
        return [s.context for s in states]
    if emb is None:
        raise ValueError("GoldFinchState.cat: the states' context pieces differ "
                         f"({[_piece_layout(s) for s in states]}); pass emb to merge them")
    return [[s.context_embeddings(emb)] for s in states]
