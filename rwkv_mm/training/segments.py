"""Long sequences trained segment by segment through the recurrent state (`train.segment_len`).

A micro-batch of T positions runs in segments of S = segment_len positions; the recurrent state
(WKV + token shift, the backbone's `RWKVState`) carries each segment into the next and the
gradient flows back through it, so the loss and every gradient equal the whole-sequence pass
while the activations kept for backward are those of one segment (bounded by S, not T):

1. forward sweep, without autograd: segments 0..K-2 from the state before each, keeping only
   the boundary states s_1..s_{K-1} (s_0 = None: the model's own initial state, which state
   tuning trains);
2. reverse sweep, k = K-1..0: segment k runs again from s_k (a leaf that requires a gradient)
   with autograd, then one `torch.autograd.backward` on (its weighted loss, its output state)
   with (1, the gradient of the state that segment k+1 sent back); s_k.grad goes on to
   segment k-1.

Nothing is detached (this is not truncated BPTT) and no graph outlives its segment. Costs: one
extra forward pass of the blocks (the sweep), and K-1 states of L·(2D + H·N²) floats per sequence.

The protocol with loss functions: a loss function that can run in segments carries a
`Segmented` as its `segmented` attribute (`lm_head_loss.lm_loss`, `vision.model.vlm_loss`):
`run(model, batch, start, end, state, with_loss)` runs positions [start, end) of the batch's
rows from `state` and returns a `SegmentOut`; `bounds(model, batch, segment_len)` picks the
segment boundaries (a loss may keep some spans whole, e.g. VisualRWKV-6's reversed image span).
Any other loss function (the audio tagger's bidirectional encoder reads a whole clip) makes
`train.segment_len > 0` a `UserError`, as does a GoldFinch backbone (its GOLD layers attend over
the key cache of every earlier position: a segment would need them all, so memory would no
longer be bounded by the segment).

Distributed: several backward calls per step, gradients synchronised only in the very last one
(`grad_sync`); under FSDP every process runs as many segments as the process with the most
(the others run zero-gradient ones), since every forward and backward gathers parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
import torch.distributed as dist
from torch import nn

from rwkv_mm.backbone import RWKVState
from rwkv_mm.errors import ConfigError, UserError

Batch = dict[str, Any]
#: weigh(loss_sum, logits|None) -> the scalar whose backward gives this part's gradient (the
#: trainer's share of the global loss, plus L2Wrap for returned logits)
Weigh = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class SegmentOut:
    """What a loss function's segment run returns: `loss_sum` (summed token losses of the
    segment's targets; None without `with_loss`), `logits` (returned for the trainer's L2Wrap on
    the plain head path, else None), the state after the segment's last position and, without
    `with_loss`, the model's output there (e.g. the last position's hidden state; every block's
    output leads to it)."""

    loss_sum: torch.Tensor | None
    logits: torch.Tensor | None
    state: RWKVState
    output: torch.Tensor | None = None


SegmentRun = Callable[[nn.Module, Batch, int, int, RWKVState | None, bool], SegmentOut]
SegmentBounds = Callable[[nn.Module, Batch, int], list[int]]


def even_bounds(model: nn.Module, batch: Batch, segment_len: int) -> list[int]:
    """[0, S, 2S, ..., T] over the batch's padded length T (`targets` [B, T])."""
    T = batch["targets"].shape[1]
    return [*range(0, T, segment_len), T]


@dataclass(frozen=True)
class Segmented:
    """How a loss function runs in segments (set as its `segmented` attribute).

    run(model, batch, start, end, state, with_loss) -> SegmentOut: positions [start, end) of
        every row from `state` (None: the model's initial state); without `with_loss` only the
        state is needed (no head, no loss).
    bounds(model, batch, segment_len) -> [0, ..., T]: increasing segment boundaries.
    """

    run: SegmentRun
    bounds: SegmentBounds = even_bounds


def state_tensors(state: RWKVState) -> list[torch.Tensor]:
    """Every tensor of a state, in a fixed order."""
    return [*state.att_x, *state.wkv, *state.ffn_x]


def _leaf(state: RWKVState) -> RWKVState:
    """The same values as fresh leaves that collect their gradient."""
    leaf = state.detach()
    for t in state_tensors(leaf):
        t.requires_grad_(True)
    return leaf


def grad_sync(model: nn.Module, wrapped: nn.Module, sharded: bool, sync: bool) -> ContextManager:
    """Around a forward + backward: whether its backward synchronises gradients across
    processes (FSDP2: `set_requires_gradient_sync`; DDP: `no_sync()` when not); the others
    accumulate locally."""
    if sharded:
        model.set_requires_gradient_sync(sync)
    if not sync and wrapped is not model:
        return wrapped.no_sync()
    return contextlib.nullcontext()


class SegmentedBackward:
    """Runs a micro-batch's forward and backward in segments (module docstring).

    Args:
        segment_len: S, positions per segment.
        model, wrapped, sharded: the trainer's model, what it calls (DDP wrapper or the model)
            and whether FSDP shards it.
        support: the loss function's `Segmented`.
        autocast: the trainer's autocast context factory (forward passes run inside it).
    """

    def __init__(self, segment_len: int, model: nn.Module, wrapped: nn.Module, sharded: bool,
                 support: Segmented, autocast: Callable[[], ContextManager]) -> None:
        self.segment_len, self.support, self.autocast = segment_len, support, autocast
        self.model, self.wrapped, self.sharded = model, wrapped, sharded

    def _run(self, batch: Batch, start: int, end: int, state: RWKVState | None, with_loss: bool) -> SegmentOut:
        with self.autocast():
            return self.support.run(self.wrapped, batch, start, end, state, with_loss)

    def backward(self, batch: Batch, weigh: Weigh, last: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch (gradients accumulate in .grad); `last`: the
        step's last micro-batch, whose final backward synchronises gradients. Returns the
        micro-batch's loss sum (float64, detached)."""
        bounds = self.support.bounds(self.wrapped, batch, self.segment_len)
        K = len(bounds) - 1
        extra = self._extra_segments(K, batch["targets"].device)
        states: list[RWKVState | None] = [None]  # s_k: the state before segment k
        with torch.no_grad():
            for k in range(K - 1):
                states.append(self._run(batch, bounds[k], bounds[k + 1], states[k], False).state)
            for _ in range(extra):  # FSDP: the same parameter gathers as the longest process
                self._run(batch, bounds[0], bounds[1], None, False)
        for _ in range(extra):
            self._null_backward(batch, bounds)
        total = torch.zeros((), dtype=torch.float64, device=batch["targets"].device)
        grads: list[torch.Tensor | None] | None = None  # d loss / d (state after segment k)
        for k in reversed(range(K)):
            start = None if states[k] is None else _leaf(states[k])
            states[k] = None
            with grad_sync(self.model, self.wrapped, self.sharded, last and k == 0):
                out = self._run(batch, bounds[k], bounds[k + 1], start, True)
                roots, root_grads = [weigh(out.loss_sum, out.logits)], [None]
                if grads is not None:
                    for t, g in zip(state_tensors(out.state), grads):
                        if g is not None and t.requires_grad:
                            roots.append(t)
                            root_grads.append(g)
                pairs = [(t, g) for t, g in zip(roots, root_grads) if t.requires_grad]
                if pairs:
                    torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
            total += out.loss_sum.detach().double()
            grads = None if start is None else [t.grad for t in state_tensors(start)]
            del out, roots, root_grads, pairs, start
        return total

    def _extra_segments(self, n_segments: int, device: torch.device) -> int:
        """How many segments fewer than the process with the most this one has (FSDP only;
        0 otherwise)."""
        if not self.sharded:
            return 0
        most = torch.tensor([n_segments], dtype=torch.long, device=device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        return int(most) - n_segments

    def _null_backward(self, batch: Batch, bounds: list[int]) -> None:
        """A segment's forward and a backward of zeros (FSDP: the collectives of a real segment,
        nothing added to the gradients), never synchronising. The output is a root too: FSDP2
        gathers a block's weights for backward when the gradient of the block's output arrives."""
        with grad_sync(self.model, self.wrapped, self.sharded, False):
            out = self._run(batch, bounds[0], bounds[1], None, False)
            roots = [t for t in (out.output, *state_tensors(out.state)) if t is not None and t.requires_grad]
            if roots:
                torch.autograd.backward(roots, [torch.zeros_like(t) for t in roots])


def _uses_goldfinch(model: nn.Module) -> bool:
    return any(getattr(getattr(m, "config", None), "is_goldfinch", False) is True for m in model.modules())


def segment_backward(segment_len: int, model: nn.Module, wrapped: nn.Module, sharded: bool,
                     loss_fn: Callable, autocast: Callable[[], ContextManager]) -> SegmentedBackward | None:
    """The trainer's segment runner for `train.segment_len` (None when it is 0). A `UserError`
    naming the key when the model (GoldFinch) or the loss function cannot run in segments."""
    if not segment_len:
        return None
    if _uses_goldfinch(model):
        raise UserError(f"train.segment_len={segment_len} is not supported with backbone version goldfinch: "
                        "its GOLD layers attend over the key cache of the whole sequence, so a segment would "
                        "need every earlier position's keys and memory would no longer be bounded by the segment",
                        where="train.segment_len",
                        fix="set train.segment_len: 0 (whole sequences; train.grad_cp bounds the blocks' "
                            "activations) or train a Finch/Eagle/Goose backbone (version 6, 5 or 7)")
    support = getattr(loss_fn, "segmented", None)
    if not isinstance(support, Segmented):
        name = getattr(loss_fn, "__qualname__", type(loss_fn).__qualname__)
        raise UserError(f"train.segment_len={segment_len}: this run's loss ({name}) cannot run in segments "
                        "through a recurrent state (e.g. the audio tagger's bidirectional encoder reads a "
                        "whole clip at once)", where="train.segment_len", fix="set train.segment_len: 0")
    return SegmentedBackward(segment_len, model, wrapped, sharded, support, autocast)


def check_max_len(max_len: int | None, segment_len: int) -> None:
    """`data.max_len` bounds a sample only when segments are on (without them `data.ctx_len`
    does): a `ConfigError` naming it otherwise."""
    if max_len and not segment_len:
        raise ConfigError("data.max_len", max_len, "0 or null unless train.segment_len > 0 (without "
                          "segments data.ctx_len bounds a sample)")


def sample_len(ctx_len: int, max_len: int | None, segment_len: int) -> int:
    """The most positions a sample keeps: `data.max_len` when segments are on and it is set,
    else `data.ctx_len` (where samples are cut without segments)."""
    return (max_len or ctx_len) if segment_len else ctx_len
