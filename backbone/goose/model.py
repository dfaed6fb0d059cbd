"""The Goose (RWKV-7, x070) language model: embedding, L residual blocks, final LayerNorm and head,
with the value residual v_first running from layer 0 through every later layer.

`logits, state = model(tokens, state)` as for Eagle/Finch, with the same `RWKVState` (att_x,
wkv, ffn_x per layer; wkv [B, H, N, N] fp32 with the value index first, as BlinkDL's runtime
stores it). v_first is not state: it is layer 0's value at each position of the *current* call,
recomputed by every call (the runtime does the same), so prefill then decode equals one forward
pass over the whole sequence.

Per-layer sequence order (`layer_order`, VisualRWKV's image-span reversal): every block is
per-position recurrent, so any block may run on its own permutation of the positions. v_first is
kept in the natural order; a block given an index reads v_first permuted the same way as its
input (each position keeps its own layer-0 value), and layer 0 run on a permutation puts the
v_first it produces back in the natural order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..checkpointing import GradCheckpointing, run_block
from ..config import RWKVConfig
from ..linear import Linear
from ..model import LayerOrder, embed_inputs, lm_output
from ..state import RWKVState
from .channel_mix import ChannelMixGoose
from .init import init_goose_
from .time_mix import TimeMixGoose


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of x [B, T, D] in `index` order [B, T]."""
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class GooseStep(NamedTuple):
    """What a Goose block returns: its output, this layer's new state, and v_first."""

    x: torch.Tensor  # [B, T, D]
    att_x: torch.Tensor  # time-mix shift state [B, D]
    wkv: torch.Tensor  # [B, H, N, N] fp32, value index first
    ffn_x: torch.Tensor  # channel-mix shift state [B, D]
    v_first: torch.Tensor  # layer 0's values [B, T, D], natural order


class GooseBlock(nn.Module):
    """x += TimeMix(LN1(x)); x += ChannelMix(LN2(x)). Block 0 also owns ln0 (key `blocks.0.ln0`),
    applied to the embeddings, and produces v_first."""

    def __init__(self, config: RWKVConfig, layer_id: int) -> None:
        super().__init__()
        D, eps = config.n_embd, config.layer_norm_eps
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(D, eps=eps)
        self.ln1 = nn.LayerNorm(D, eps=eps)
        self.ln2 = nn.LayerNorm(D, eps=eps)
        self.att = TimeMixGoose(config, layer_id)
        self.ffn = ChannelMixGoose(config, layer_id)

    def forward(self, x: torch.Tensor, att_x: torch.Tensor, wkv_state: torch.Tensor,
                ffn_x: torch.Tensor, v_first: torch.Tensor | None,
                index: torch.Tensor | None = None) -> GooseStep:
        """x [B, T, D]; this layer's shift states [B, D] and WKV state [B, H, N, N]; v_first
        [B, T, D] in the natural order (None for block 0). A pure function of its arguments.

        `index` [B, T]: run on the positions in that order (see `LayerOrder`); x and v_first are
        permuted alike, the output and block 0's v_first are put back in place, and the shift
        states are those of the last position the block saw."""
        if index is None:
            return self._step(x, att_x, wkv_state, ffn_x, v_first)
        step = self._step(_take(x, index), att_x, wkv_state, ffn_x,
                          None if v_first is None else _take(v_first, index))
        inverse = torch.argsort(index, dim=1)  # [B, T]: where each position went
        v_out = _take(step.v_first, inverse) if v_first is None else v_first
        return step._replace(x=_take(step.x, inverse), v_first=v_out)

    def _step(self, x: torch.Tensor, att_x: torch.Tensor, wkv_state: torch.Tensor,
              ffn_x: torch.Tensor, v_first: torch.Tensor | None) -> GooseStep:
        if self.layer_id == 0:
            x = self.ln0(x)
        out, att_x, wkv_state, v_first = self.att(self.ln1(x), att_x, wkv_state, v_first)
        x = x + out
        out, ffn_x = self.ffn(self.ln2(x), ffn_x)
        return GooseStep(x + out, att_x, wkv_state, ffn_x, v_first)


class Goose(GradCheckpointing, nn.Module):
    """RWKV-7 "Goose" language model with the Eagle/Finch call convention (see the module
    docstring). Its state dict is the official x070 layout without layer 0's unused
    value-residual LoRA (`blocks.0.att.v0/v1/v2`, which some files carry and loading drops)."""

    #: whether `forward` takes a `layer_order` (every block is recurrent per position; v_first
    #: follows each block's permutation)
    supports_layer_order = True

    def __init__(self, config: RWKVConfig, init_weights: bool = True) -> None:
        super().__init__()
        if not config.is_goose:
            raise ValueError(f"Goose needs version '7', got {config.version!r}; "
                             "build_backbone(config) picks the family")
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(GooseBlock(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.head = Linear(config.n_embd, config.vocab_size, bias=False)
        if init_weights and self.emb.weight.device.type != "meta":
            init_goose_(self)

    def zero_state(self, batch_size: int) -> RWKVState:
        """The all-zero state of a fresh sequence, on this model's device and dtype."""
        w = self.emb.weight
        return RWKVState.zeros(self.config, batch_size, w.device, w.dtype)

    def forward(self, tokens: torch.Tensor | None = None, state: RWKVState | None = None, *,
                inputs_embeds: torch.Tensor | None = None, last_only: bool = False,
                return_hidden: bool = False, layer_order: LayerOrder | None = None):
        """Run T steps for each of B sequences (arguments and results as `RWKV.forward`).

        Returns (logits [B, T, V] — [B, 1, V] with `last_only`, hidden states [B, T, D] with
        `return_hidden` —, the new RWKVState)."""
        x = embed_inputs(self.emb, tokens, inputs_embeds)
        B = x.shape[0]
        if state is None:
            state = self.zero_state(B)
        elif not isinstance(state, RWKVState):
            raise ValueError(f"Goose needs an RWKVState, got {type(state).__name__}")
        elif state.batch_size != B:
            raise ValueError(f"state holds {state.batch_size} sequences but the input has B={B}")
        L = self.config.n_layer
        new_state = RWKVState([None] * L, [None] * L, [None] * L)
        v_first = None
        for i, block in enumerate(self.blocks):  # activations recomputed in backward with grad_cp
            index = layer_order(i) if layer_order is not None else None
            step = run_block(block, x, state.att_x[i], state.wkv[i], state.ffn_x[i], v_first, index,
                             enabled=self.grad_checkpointing)
            x, v_first = step.x, step.v_first
            new_state.att_x[i], new_state.wkv[i], new_state.ffn_x[i] = step.att_x, step.wkv, step.ffn_x
        return lm_output(self, x, last_only, return_hidden), new_state
