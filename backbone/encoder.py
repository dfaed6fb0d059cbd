"""Bidirectional encoders built from backbone blocks: what a front end such as AudioRWKV asks the
backbone for, without naming a family's block classes.

A front end subclasses `RWKVEncoder`, maps its input to tokens [B, N, D] and lets the backbone
build and run the blocks:

    class MyEncoder(RWKVEncoder):
        def __init__(self, config: RWKVConfig):
            super().__init__()
            self.embed = ...                                       # input -> tokens [B, N, D]
            self.ln0 = nn.LayerNorm(config.n_embd)
            self.add_blocks(config, shift=my_shift, drop_path=0.1) # L blocks of config's family
            self.ln_out = nn.LayerNorm(config.n_embd)
            self.init_block_weights_()                             # the family's initialisation

        def forward(self, x):
            tokens, context = self.embed(x)
            return self.ln_out(self.run_blocks(self.ln0(tokens), context))

`add_blocks` registers `blocks` (one ModuleList, the backbone's state-dict names `blocks.i.att.*`,
`blocks.i.ffn.*`) and whatever the family keeps beside them, on the encoder itself (GoldFinch:
the key cache's `w_kv_cache_a`/`w_kv_cache_b`); `run_blocks` hands along what a family's blocks
pass each other (GoldFinch: the key cache; Goose: block 0's values, v_first). A new family adds
its branch here and in `build.py`; front ends stay as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checkpointing import GradCheckpointing, run_block
from .config import RWKVConfig
from .encoder_block import EncoderBlock, TokenShift
from .goldfinch.encoder import goldfinch_encoder_block
from .goldfinch.init import init_goldfinch_
from .goldfinch.key_cache import add_key_cache, cache_keys
from .goose.encoder import GooseEncoderBlock
from .goose.init import init_goose_
from .init import init_rwkv_


class RWKVEncoder(GradCheckpointing, nn.Module):
    """Base of bidirectional encoders made of backbone blocks (see the module docstring)."""

    def add_blocks(self, config: RWKVConfig, shift: TokenShift | None = None, drop_path: float = 0.0) -> None:
        """Register `blocks`: config.n_layer bidirectional blocks of config's family, every lerp fed
        by `shift` (None: the causal token shift from zeros), stochastic depth rising linearly
        from 0 at the first block to `drop_path` at the last; and the family's other modules
        (GoldFinch: the key cache's matrices)."""
        L = config.n_layer
        self.block_config = config
        rates = [drop_path * i / max(L - 1, 1) for i in range(L)]
        make = (goldfinch_encoder_block if config.is_goldfinch
                else GooseEncoderBlock if config.is_goose else EncoderBlock)
        self.blocks = nn.ModuleList(make(config, i, shift=shift, drop_path=rates[i]) for i in range(L))
        if config.is_goldfinch:
            add_key_cache(self, config)

    @property
    def first_gold_layer(self) -> int:
        """Index of the first block that reads the key cache (GoldFinch's first GOLD block; the
        blocks below it write the cache); n_layer for families without one."""
        config = self.block_config
        return config.first_gold_layer if config.is_goldfinch else config.n_layer

    def run_blocks(self, x0: torch.Tensor, context: Any = None) -> torch.Tensor:
        """Tokens x0 [B, N, D] (normed) through every block -> [B, N, D]. `context` goes to the
        token shift. GoldFinch: the key cache is written once, from the output of the last block
        below `first_gold_layer`, and read by every block from there. Goose: block 0's values
        (v_first [B, N, D]) go to every later block. With `grad_checkpointing` each block's
        activations are recomputed in backward (`run_block`)."""
        h, keys, v_first = x0, None, None
        for i, block in enumerate(self.blocks):
            if i == self.first_gold_layer:
                keys = cache_keys(self, x0, h)  # [B, N, D]
            if self.block_config.is_goose:
                h, v_first = run_block(block, h, context, v_first, enabled=self.grad_checkpointing)
            else:
                h = run_block(block, h, context, keys, x0, enabled=self.grad_checkpointing)
        return h

    @torch.no_grad()
    def init_block_weights_(self) -> None:
        """The family's initialisation of every block, norm and matrix of this module, in place
        (Eagle/Finch: paper App. I; Goose: RWKV-LM's x070 code; GoldFinch: its code's). Front ends
        re-initialise their own parts (heads, embeddings) afterwards."""
        config = self.block_config
        (init_goldfinch_ if config.is_goldfinch else init_goose_ if config.is_goose else init_rwkv_)(self)

    def family_parameter_counts(self) -> dict[str, int]:
        """Parameters the family keeps beside the blocks, by part (GoldFinch: {"key_cache": n})."""
        if not self.block_config.is_goldfinch:
            return {}
        return {"key_cache": self.w_kv_cache_a.weight.numel() + self.w_kv_cache_b.weight.numel()}
