"""Activation checkpointing of residual blocks (`train.grad_cp`): one switch every family's block
loop consults, and one call that runs a block with or without recomputation.

A model (or encoder) that runs a stack of blocks subclasses `GradCheckpointing` and calls each
block through `run_block`:

    class MyModel(GradCheckpointing, nn.Module):
        def forward(self, x):
            for block in self.blocks:
                x = run_block(block, x, enabled=self.grad_checkpointing)
            return x

`set_grad_checkpointing(model)` turns it on in every such part of a model (a VisualRWKV's LM, an
AudioRWKV's encoder, ...) and says how many it found.

With it on (and autograd recording), a block keeps only its inputs for backward and is run again
during backward to rebuild what its own backward needs (`torch.utils.checkpoint`, non-reentrant:
the RNG state — DropPath's masks — and the autocast state are those of the first run; inputs that
need no gradient, frozen blocks and FSDP2-sharded blocks are all handled). A block run this way
must be a pure function of its arguments: it returns its new recurrent state instead of writing it
into a state object, so the recomputation in backward cannot write the state a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

R = TypeVar("R")


def run_block(block: Callable[..., R], *args: Any, enabled: bool, **kwargs: Any) -> R:
    """block(*args, **kwargs); with `enabled` (and gradients being recorded) its intermediate
    activations are freed after the forward pass and recomputed in backward instead.

    `block` is usually the block module itself (its hooks, e.g. FSDP2's, run in both passes); it
    must not write anything outside its return value (see the module docstring)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


class GradCheckpointing:
    """Mixin of a module that runs blocks through `run_block`: the `grad_checkpointing` switch
    (off by default) its block loop passes as `enabled`."""

    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every block's activations in backward (True) or keep them (False)."""
        self.grad_checkpointing = bool(enabled)


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch activation checkpointing in every part of `model` that supports it (every
    submodule that is a `GradCheckpointing`, the model itself included). Returns how many parts
    were switched: 0 means the model has nothing to checkpoint."""
    parts = [m for m in model.modules() if isinstance(m, GradCheckpointing)]
    for part in parts:
        part.set_grad_checkpointing(enabled)
    return len(parts)
