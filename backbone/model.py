"""The Eagle / Finch language model: embedding, L residual blocks, final LayerNorm and head."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .channel_mix import ChannelMix
from .checkpointing import GradCheckpointing, run_block
from .config import RWKVConfig
from .init import init_rwkv_
from .initial_state import adopt_initial_state_on_load, fresh_state, layer_start
from .linear import Linear
from .state import RWKVState
from .time_mix import time_mix_class


def embed_inputs(emb: nn.Embedding, tokens: torch.Tensor | None,
                 inputs_embeds: torch.Tensor | None) -> torch.Tensor:
    """The [B, T, D] input of a language model from exactly one of tokens [B, T] or
    inputs_embeds [B, T, D], with the checks (and messages) every backbone uses."""
    V, D = emb.weight.shape
    if (tokens is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of tokens [B, T] or inputs_embeds [B, T, D]")
    if tokens is not None:
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected [B, T], got shape {tuple(tokens.shape)}")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < V:
            raise ValueError(f"token ids must lie in [0, {V}); got "
                             f"min {int(tokens.min())}, max {int(tokens.max())}")
        x = emb(tokens)
    else:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != D:
            raise ValueError(f"inputs_embeds: expected [B, T, {D}], "
                             f"got shape {tuple(inputs_embeds.shape)}")
        x = inputs_embeds
    if x.shape[1] == 0:
        raise ValueError("empty sequence: T must be at least 1")
    return x


#: The per-layer sequence order a front end may ask of a language model's forward pass:
#: `layer_order(i)` is an index [B, T] (a permutation of each row's positions) that block i runs
#: on, or None for the natural order (VisualRWKV-6 reverses the image span in odd layers).
LayerOrder = Callable[[int], torch.Tensor | None]


def run_reordered(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
    """fn applied to x [B, T, D] with each row's positions taken in `index` order [B, T], and its
    output [B, T, D] put back in the original order."""
    y = fn(x.gather(1, index.unsqueeze(-1).expand_as(x)))
    inverse = torch.argsort(index, dim=1)  # [B, T]: where each position went
    return y.gather(1, inverse.unsqueeze(-1).expand_as(y))


def lm_output(model: nn.Module, x: torch.Tensor, last_only: bool, return_hidden: bool) -> torch.Tensor:
    """The end of every language model's forward pass: x [B, T, D] from the last block ->
    ln_out -> logits [B, T, V] (the last position only with `last_only`; the normed hidden
    states instead of logits with `return_hidden`)."""
    if last_only:
        x = x[:, -1:]
    x = model.ln_out(x)
    return x if return_hidden else model.head(x)


class Block(nn.Module):
    """One residual block: x += TimeMix(LN1(x)); x += ChannelMix(LN2(x)). Block 0 also owns ln0,
    the LayerNorm applied to the embeddings (official key `blocks.0.ln0`)."""

    def __init__(self, config: RWKVConfig, layer_id: int) -> None:
        super().__init__()
        D, eps = config.n_embd, config.layer_norm_eps
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(D, eps=eps)
        self.ln1 = nn.LayerNorm(D, eps=eps)
        self.ln2 = nn.LayerNorm(D, eps=eps)
        self.att = time_mix_class(config)(config, layer_id)
        self.ffn = ChannelMix(config, layer_id)

    def forward(self, x: torch.Tensor, state: RWKVState, new_state: RWKVState) -> torch.Tensor:
        """x: [B, T, D]. Reads this layer's entries of `state`, writes them into `new_state`."""
        i = self.layer_id
        if i == 0:
            x = self.ln0(x)
        att_x, wkv, ffn_x = layer_start(self, state, x.shape[0])  # None entries: the learned state
        out, new_state.att_x[i], new_state.wkv[i] = self.att(self.ln1(x), att_x, wkv)
        x = x + out
        out, new_state.ffn_x[i] = self.ffn(self.ln2(x), ffn_x)
        return x + out


def layer_step(block: Block, x: torch.Tensor, state: RWKVState, index: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block i's pass as a pure function (what `run_block` may run again in backward): x [B, T, D]
    and the state before it -> (output [B, T, D], its new att_x [B, D], wkv [B, H, N, N],
    ffn_x [B, D]). `index` [B, T]: run on the positions in that order (see `LayerOrder`)."""
    i = block.layer_id
    new = RWKVState([None] * (i + 1), [None] * (i + 1), [None] * (i + 1))  # written by this call only
    if index is None:
        x = block(x, state, new)
    else:
        x = run_reordered(lambda h: block(h, state, new), x, index)
    return x, new.att_x[i], new.wkv[i], new.ffn_x[i]


class RWKV(GradCheckpointing, nn.Module):
    """Eagle (RWKV-5.2) or Finch (RWKV-6) language model.

    `logits, state = model(tokens, state)` with tokens [B, T] (long) gives logits [B, T, V] and the
    state after the last token; passing that state to the next call continues the sequence exactly.
    Front ends pass `inputs_embeds` [B, T, D] instead of tokens (block 0's ln0 still applies).
    The state dict is the official BlinkDL layout (`emb.weight`, `blocks.i.att.*`, ...).
    """

    #: whether `forward` takes a `layer_order` (every layer is recurrent, so any order works)
    supports_layer_order = True

    def __init__(self, config: RWKVConfig, init_weights: bool = True) -> None:
        super().__init__()
        if config.is_goldfinch:
            raise ValueError("RWKV(config) builds Eagle or Finch; for version='goldfinch' use "
                             "build_backbone(config) (or GoldFinch(config))")
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.head = Linear(config.n_embd, config.vocab_size, bias=False)
        if init_weights and self.emb.weight.device.type != "meta":
            init_rwkv_(self)
        adopt_initial_state_on_load(self)  # a state dict with `blocks.i.att.time_state` adds it

    def zero_state(self, batch_size: int) -> RWKVState:
        """The all-zero state of a fresh sequence, on this model's device and dtype."""
        w = self.emb.weight
        return RWKVState.zeros(self.config, batch_size, w.device, w.dtype)

    def forward(self, tokens: torch.Tensor | None = None, state: RWKVState | None = None, *,
                inputs_embeds: torch.Tensor | None = None, last_only: bool = False,
                return_hidden: bool = False, layer_order: LayerOrder | None = None):
        """Run T steps for each of B sequences.

        Args:
            tokens: [B, T] token ids (or give `inputs_embeds`).
            state: state after the previous call, or None for a fresh sequence (zeros, or the
                model's learned initial state: `initial_state.py`).
            inputs_embeds: [B, T, D] embeddings in place of tokens.
            last_only: compute the head for the last position only (prefill): logits [B, 1, V].
            return_hidden: return the final hidden states [B, T, D] (after ln_out) instead of logits.
            layer_order: per-layer sequence order (see `LayerOrder`): block i runs on the
                positions in the order `layer_order(i)` gives (its output is put back in place;
                its shift states are those of the last position it saw).
        Returns:
            (logits [B, T, V] — or hidden states —, new RWKVState)
        """
        x = embed_inputs(self.emb, tokens, inputs_embeds)
        B, T, _ = x.shape
        if state is None:
            state = fresh_state(self, B)
        elif state.batch_size != B:
            raise ValueError(f"state holds {state.batch_size} sequences but the input has B={B}")
        L = self.config.n_layer
        new_state = RWKVState([None] * L, [None] * L, [None] * L)
        for block in self.blocks:  # each block's activations recomputed in backward with grad_cp
            i = block.layer_id
            index = layer_order(i) if layer_order is not None else None
            x, new_state.att_x[i], new_state.wkv[i], new_state.ffn_x[i] = run_block(
                layer_step, block, x, state, index, enabled=self.grad_checkpointing)
        return lm_output(self, x, last_only, return_hidden), new_state
