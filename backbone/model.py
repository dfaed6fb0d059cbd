"""The Eagle / Finch language model: embedding, L residual blocks, final LayerNorm and head."""

from __future__ import annotations

import torch
from torch import nn

from .channel_mix import ChannelMix
from .config import RWKVConfig
from .linear import Linear
from .init import init_rwkv_
from .state import RWKVState
from .time_mix import TimeMixEagle, TimeMixFinch


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
        time_mix = TimeMixFinch if config.version == "6" else TimeMixEagle
        self.att = time_mix(config, layer_id)
        self.ffn = ChannelMix(config, layer_id)

    def forward(self, x: torch.Tensor, state: RWKVState, new_state: RWKVState) -> torch.Tensor:
        """x: [B, T, D]. Reads this layer's entries of `state`, writes them into `new_state`."""
        i = self.layer_id
        if i == 0:
            x = self.ln0(x)
        out, new_state.att_x[i], new_state.wkv[i] = self.att(self.ln1(x), state.att_x[i], state.wkv[i])
        x = x + out
        out, new_state.ffn_x[i] = self.ffn(self.ln2(x), state.ffn_x[i])
        return x + out


class RWKV(nn.Module):
    """Eagle (RWKV-5.2) or Finch (RWKV-6) language model.

    `logits, state = model(tokens, state)` with tokens [B, T] (long) gives logits [B, T, V] and the
    state after the last token; passing that state to the next call continues the sequence exactly.
    Front ends pass `inputs_embeds` [B, T, D] instead of tokens (block 0's ln0 still applies).
    The state dict is the official BlinkDL layout (`emb.weight`, `blocks.i.att.*`, ...).
    """

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

    def zero_state(self, batch_size: int) -> RWKVState:
        """The all-zero state of a fresh sequence, on this model's device and dtype."""
        w = self.emb.weight
        return RWKVState.zeros(self.config, batch_size, w.device, w.dtype)

    def forward(self, tokens: torch.Tensor | None = None, state: RWKVState | None = None, *,
                inputs_embeds: torch.Tensor | None = None, last_only: bool = False,
                return_hidden: bool = False):
        """Run T steps for each of B sequences.

        Args:
            tokens: [B, T] token ids (or give `inputs_embeds`).
            state: state after the previous call, or None for a fresh sequence.
            inputs_embeds: [B, T, D] embeddings in place of tokens.
            last_only: compute the head for the last position only (prefill): logits [B, 1, V].
            return_hidden: return the final hidden states [B, T, D] (after ln_out) instead of logits.
        Returns:
            (logits [B, T, V] — or hidden states —, new RWKVState)
        """
        x = embed_inputs(self.emb, tokens, inputs_embeds)
        B, T, _ = x.shape
        if state is None:
            state = self.zero_state(B)
        elif state.batch_size != B:
            raise ValueError(f"state holds {state.batch_size} sequences but the input has B={B}")
        L = self.config.n_layer
        new_state = RWKVState([None] * L, [None] * L, [None] * L)
        for block in self.blocks:
            x = block(x, state, new_state)
        if last_only:
            x = x[:, -1:]
        x = self.ln_out(x)
        if return_hidden:
            return x, new_state
        return self.head(x), new_state
