"""GoldFinch (arXiv 2407.12077): Finch-C2 layers below, GOLD attention layers on top, and one
compressed key cache between them.

Layers 0..s-1 (s = L - n_gold_layer, int(2L/3) by default) are Finch-C2 blocks; after the last
one the model writes the compressed key cache ("TokenCat"):

    c_t = W_a x_t                          (D -> D/16, stored per token with its token id)
    key_t = rms_norm(W_b [x0_t; c_t])      (decompressed: x0_t = ln0(emb(token_t)) is rebuilt
                                            from the id, so only the id and c_t are stored)

(`key_cache.py`). Every GOLD layer (s..L-1) attends over these keys and over values rebuilt
from x0 (`gold.py`); every layer keeps Finch's channel mix. Pre-LN residual blocks, ln0 (in
block 0), ln_out and head as in Finch. State-dict keys follow the GoldFinch code (`blocks.i.att.*`,
`w_kv_cache_a.weight`, `w_kv_cache_b.weight`).

Inference (`model(tokens, state)` as for Eagle/Finch):
- prefill (`last_only=True`) runs the Finch-C2 stack over the whole prompt (chunked WKV, O(1)
  per token) and writes the cache; the GOLD stack then only needs the last 2·n_gold + 1
  positions: GOLD keys/values never depend on GOLD outputs, and each GOLD block's token shifts
  reach back two positions (time mix and channel mix), so the last position is exact;
- decoding runs every layer for the new token, attending over the cache.
Logits equal those of a full forward pass (tests/backbone/test_goldfinch.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..channel_mix import ChannelMix
from ..checkpointing import GradCheckpointing, run_block
from ..config import RWKVConfig
from ..linear import Linear
from ..model import LayerOrder, embed_inputs, lm_output
from .finch_c2 import TimeMixFinchC2
from .gold import GoldAttention
from .init import init_goldfinch_
from .key_cache import add_key_cache, decompress_keys
from .state import KV, GoldFinchState


@dataclass
class _GoldInputs:
    """What one forward call hands every GOLD block: the span of positions whose keys/values
    are computed in this call, the positions just before it, and the kept memo."""

    keys: torch.Tensor  # decompressed keys of the span [B, S, D]
    x0: torch.Tensor  # ln0(emb) of the span [B, S, D]
    prev_key: torch.Tensor  # the same at the position before the span [B, D] (zeros at 0)
    prev_x0: torch.Tensor  # [B, D]
    pos0: int  # absolute position of the span's first token
    memo: list[KV] | None  # keys/values of the positions before the span, per GOLD layer


class BlockOutput(NamedTuple):
    """What a GoldFinch block returns."""

    x: torch.Tensor  # block output [B, T, D]
    att_x: torch.Tensor  # time-mix shift state [B, D]
    ffn_x: torch.Tensor  # channel-mix shift state [B, D]
    mixer_state: torch.Tensor | KV  # Finch-C2: WKV state [B, H, N, N]; GOLD: (k, v) [B, H, S, N]
    x0: torch.Tensor | None  # block 0 only: ln0 of every row it was given [B, n_ctx + T, D]


class GoldFinchBlock(nn.Module):
    """x += TimeMix(LN1(x)); x += ChannelMix(LN2(x)), with a Finch-C2 or GOLD time mix.
    Block 0 owns ln0 (key `blocks.0.ln0`), applied to the embeddings."""

    def __init__(self, config: RWKVConfig, layer_id: int) -> None:
        super().__init__()
        D, eps = config.n_embd, config.layer_norm_eps
        self.layer_id = layer_id
        self.gold_index = layer_id - config.first_gold_layer  # < 0 for Finch-C2 blocks
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(D, eps=eps)
        self.ln1 = nn.LayerNorm(D, eps=eps)
        self.ln2 = nn.LayerNorm(D, eps=eps)
        self.att = GoldAttention(config, layer_id) if self.is_gold else TimeMixFinchC2(config, layer_id)
        self.ffn = ChannelMix(config, layer_id)

    @property
    def is_gold(self) -> bool:
        return self.gold_index >= 0

    def forward(self, x: torch.Tensor, att_x: torch.Tensor, ffn_x: torch.Tensor,
                wkv_state: torch.Tensor | None = None, gold: _GoldInputs | None = None,
                n_ctx: int = 0) -> BlockOutput:
        """x: [B, T, D] (block 0: embeddings [B, n_ctx + T, D], the first n_ctx rows past
        positions that only need x0); att_x, ffn_x: [B, D] shift states; wkv_state [B, H, N, N]
        for Finch-C2, `gold` for GOLD blocks."""
        x0 = None
        if self.layer_id == 0:
            x0 = self.ln0(x)
            x = x0[:, n_ctx:]
        if self.is_gold:
            k, v = self.att.keys_values(gold.keys, gold.x0, gold.prev_key, gold.prev_x0, gold.pos0)
            if gold.memo is not None:
                k_old, v_old = gold.memo[self.gold_index]
                k, v = torch.cat((k_old, k), dim=2), torch.cat((v_old, v), dim=2)
            out, att_x = self.att(self.ln1(x), att_x, k, v)
            mixer_state = (k, v)
        else:
            out, att_x, mixer_state = self.att(self.ln1(x), att_x, wkv_state)
        x = x + out
        out, ffn_x = self.ffn(self.ln2(x), ffn_x)
        return BlockOutput(x + out, att_x, ffn_x, mixer_state, x0)


class GoldFinch(GradCheckpointing, nn.Module):
    """GoldFinch language model with the Eagle/Finch call convention.

    `logits, state = model(tokens, state)`: tokens [B, T] → logits [B, T, V] and a
    `GoldFinchState`; passing it back continues the sequence exactly. `inputs_embeds` [B, T, D]
    may replace tokens (those positions keep their embeddings in the cache instead of ids).
    `last_only=True` (prefill) computes the GOLD stack for the last positions only.
    """

    #: GOLD layers attend over one key cache written in sequence order (and extended by later
    #: calls), so no layer can run on its own order of the positions: no `layer_order`
    supports_layer_order = False

    def __init__(self, config: RWKVConfig, init_weights: bool = True) -> None:
        super().__init__()
        if not config.is_goldfinch:
            raise ValueError(f"GoldFinch needs version='goldfinch', got {config.version!r}")
        self.config = config
        D = config.n_embd
        self.emb = nn.Embedding(config.vocab_size, D)
        self.blocks = nn.ModuleList(GoldFinchBlock(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.head = Linear(D, config.vocab_size, bias=False)
        add_key_cache(self, config)  # w_kv_cache_a (D -> D/16), w_kv_cache_b (TokenCat -> key)
        if init_weights and self.emb.weight.device.type != "meta":
            init_goldfinch_(self)

    @property
    def gold_window(self) -> int:
        """Positions the GOLD stack needs in a prefill to get the last one exact: 2·n_gold + 1."""
        return 2 * self.config.n_gold_layer + 1

    def zero_state(self, batch_size: int, keep_kv_memo: bool = True) -> GoldFinchState:
        """The state of B fresh sequences, on this model's device and dtype."""
        w = self.emb.weight
        return GoldFinchState.zeros(self.config, batch_size, w.device, w.dtype, keep_kv_memo)

    def decompress_keys(self, x0: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
        """TokenCat: keys [B, T, D] = rms_norm(W_b [x0; c]) from x0 [B, T, D] and c [B, T, D/16]."""
        return decompress_keys(self, x0, compressed)

    def forward(self, tokens: torch.Tensor | None = None, state: GoldFinchState | None = None, *,
                inputs_embeds: torch.Tensor | None = None, last_only: bool = False,
                return_hidden: bool = False, layer_order: LayerOrder | None = None):
        """Run T steps for each of B sequences (arguments and results as `RWKV.forward`;
        `layer_order` must be None, see `supports_layer_order`)."""
        if layer_order is not None:
            raise ValueError("GoldFinch runs every layer in sequence order (supports_layer_order "
                             "is False): pass layer_order=None")
        e = embed_inputs(self.emb, tokens, inputs_embeds)  # [B, T, D]
        B, T, D = e.shape
        if state is None:
            state = self.zero_state(B)
        elif not isinstance(state, GoldFinchState):
            raise ValueError(f"GoldFinch needs a GoldFinchState, got {type(state).__name__}")
        elif state.batch_size != B:
            raise ValueError(f"state holds {state.batch_size} sequences but the input has B={B}")
        cfg = self.config
        s, P = cfg.first_gold_layer, state.length
        # Past positions whose x0 this call needs: all of them when the GOLD keys/values must be
        # rebuilt (no memo), else only the last one (the token shift into the new span).
        rebuild = P > 0 and state.kv_memo is None
        n_ctx = P if rebuild else min(P, 1)
        if n_ctx:
            e = torch.cat((state.context_embeddings(self.emb, last=n_ctx).to(e.dtype), e), dim=1)

        # ---- Finch-C2 stack (block 0 also applies ln0 to the past rows) ------------------------
        new = GoldFinchState([None] * cfg.n_layer, [None] * cfg.n_layer, [None] * s, [],
                             state.key_cache, None, state.keep_kv_memo)
        x, x0_all = e, None
        for i in range(s):
            out = run_block(self.blocks[i], x, state.att_x[i], state.ffn_x[i], state.wkv[i],
                            n_ctx=n_ctx if i == 0 else 0, enabled=self.grad_checkpointing)
            x, new.att_x[i], new.ffn_x[i], new.wkv[i] = out.x, out.att_x, out.ffn_x, out.mixer_state
            if i == 0:
                x0_all = out.x0  # [B, n_ctx + T, D]

        # ---- the compressed key cache of the new tokens -----------------------------------------
        x0_new = x0_all[:, n_ctx:]  # [B, T, D]
        c_new = self.w_kv_cache_a(x)  # [B, T, Dc]
        keys_new = self.decompress_keys(x0_new, c_new)  # [B, T, D]
        zeros = x.new_zeros(B, D)
        if rebuild:  # every position's keys/values again, from ids + compressed keys
            keys = torch.cat((self.decompress_keys(x0_all[:, :P], state.key_cache), keys_new), dim=1)
            gold = _GoldInputs(keys, x0_all, zeros, zeros, 0, None)
        elif P:  # extend the memo: the span is the new tokens, shifted from position P-1
            prev_key = self.decompress_keys(x0_all[:, :1], state.key_cache[:, -1:])[:, 0]
            gold = _GoldInputs(keys_new, x0_new, prev_key, x0_all[:, 0], P, state.kv_memo)
        else:
            gold = _GoldInputs(keys_new, x0_new, zeros, zeros, 0, None)

        # ---- GOLD stack ----------------------------------------------------------------------------
        windowed = last_only and T > self.gold_window
        if windowed:  # prefill: only the last positions; their shift states start from zeros
            x = x[:, -self.gold_window:]
        memo = []
        for i in range(s, cfg.n_layer):
            att_x, ffn_x = (zeros, zeros) if windowed else (state.att_x[i], state.ffn_x[i])
            out = run_block(self.blocks[i], x, att_x, ffn_x, gold=gold, enabled=self.grad_checkpointing)
            x, new.att_x[i], new.ffn_x[i] = out.x, out.att_x, out.ffn_x
            memo.append(out.mixer_state)

        new.context = state.with_new_tokens(tokens if tokens is not None else inputs_embeds)
        new.key_cache = torch.cat((state.key_cache, c_new), dim=1)
        new.kv_memo = memo if state.keep_kv_memo else None
        return lm_output(self, x, last_only, return_hidden), new
