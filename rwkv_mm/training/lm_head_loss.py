"""The LM head and its cross entropy without the full-vocabulary logits (`train.loss_chunk`).

A language model's loss needs logits [N, V] for N positions (V = 65536 for the World vocabulary:
4 GiB in fp32 at 8 × 2048 positions, and autograd keeps several such tensors). Here the head runs
over `chunk` positions at a time: each chunk's logits give its cross entropy and, at once, its
gradients with respect to the hidden states and the head's weight (softmax - one-hot, times the
weight or the hidden states); the logits are then dropped. Backward only scales the stored
gradients by the incoming gradient of the loss. Memory: one chunk's logits, the hidden states'
gradient [N, D] and the head weight's [V, D], never [N, V]; no recomputation, so no extra time.

RWKV-LM's L2Wrap (`l2wrap.py`) is part of it: each position's largest logit gets the extra
gradient 1e-4 · max / n_positions, independent of the loss's scale (as in RWKV-LM), folded into
the stored gradients through the index of that logit.

Which positions reach the head: those with a target (`targets != IGNORE_INDEX`); with L2Wrap and
`l2wrap_every_position` (a language model's loss, as RWKV-LM defines L2Wrap over all B·T
positions) every position does, the ignored ones contributing only L2Wrap's term.

The trainer sets the chunk size and L2Wrap's divisor for the step (`head_loss_options`); loss
functions call `head_loss` and return no logits, which tells the trainer that L2Wrap is done.
`chunk=0` is the plain path: logits of the selected positions returned for the trainer's L2Wrap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rwkv_mm.constants import IGNORE_INDEX

from .config import DEFAULT_LOSS_CHUNK
from .l2wrap import L2WRAP_COEF
from .segments import Segmented, SegmentOut


@dataclass(frozen=True)
class HeadLossOptions:
    """How `head_loss` runs. chunk: positions per chunk (0 = plain, logits returned);
    l2wrap_positions: L2Wrap's divisor n_positions (0 = no L2Wrap term)."""

    chunk: int = DEFAULT_LOSS_CHUNK
    l2wrap_positions: float = 0.0


_OPTIONS: ContextVar[HeadLossOptions] = ContextVar("head_loss_options", default=HeadLossOptions())


@contextlib.contextmanager
def head_loss_options(chunk: int = DEFAULT_LOSS_CHUNK, l2wrap_positions: float = 0.0) -> Iterator[HeadLossOptions]:
    """`head_loss` inside the block runs with these options (the trainer sets them per step)."""
    token = _OPTIONS.set(HeadLossOptions(chunk, l2wrap_positions))
    try:
        yield _OPTIONS.get()
    finally:
        _OPTIONS.reset(token)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (the model itself otherwise)."""
    return model.module if hasattr(model, "module") else model


def head_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, *,
              l2wrap_every_position: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cross entropy of `head(hidden)` against targets, summed over targets != IGNORE_INDEX.

    Args:
        head: the LM head (a bias-free linear layer, weight [V, D]).
        hidden: final hidden states [B, T, D] (after ln_out).
        targets: [B, T] next-token ids, IGNORE_INDEX where there is no loss.
        l2wrap_every_position: L2Wrap (when the trainer asks for it) reaches every position,
            not only those with a target.
    Returns:
        (loss_sum, n_tokens, logits): logits [n, V] of the positions that reached the head on
        the plain path (`chunk=0`, for the trainer's L2Wrap), else None.
    """
    options = _OPTIONS.get()
    keep = targets != IGNORE_INDEX  # [B, T]
    l2wrap = options.l2wrap_positions > 0 and torch.is_grad_enabled()
    if l2wrap and l2wrap_every_position:
        rows, row_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)  # [B·T, D], [B·T]
    else:
        rows, row_targets = hidden[keep], targets[keep]  # [n, D], [n]
    if options.chunk == 0:
        logits = head(rows)  # [n, V]
        loss_sum = F.cross_entropy(logits.float(), row_targets, ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, keep.sum(), logits
    if getattr(head, "bias", None) is not None:
        raise ValueError("head_loss: the chunked path takes a bias-free head")
    factor = L2WRAP_COEF / options.l2wrap_positions if l2wrap else 0.0
    loss_sum = _ChunkedHeadLoss.apply(rows, head.weight, row_targets, options.chunk, factor,
                                      torch.is_grad_enabled())
    return loss_sum, keep.sum(), None


def lm_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The trainer's default loss: next-token cross entropy summed over targets != IGNORE_INDEX
    (batch: input_ids, targets [B, T]), through `head_loss`; L2Wrap, when the trainer asks for it,
    reaches every position (RWKV-LM's B·T)."""
    hidden, _ = model(batch["input_ids"], return_hidden=True)  # [B, T, D]
    return head_loss(unwrap(model).head, hidden, batch["targets"], l2wrap_every_position=True)


def lm_segment(model: nn.Module, batch: dict, start: int, end: int, state, with_loss: bool) -> SegmentOut:
    """`lm_loss` over positions [start, end) of the batch from `state` (`train.segment_len`,
    see `segments.py`): the loss of those positions' targets and the state after them."""
    hidden, state = model(batch["input_ids"][:, start:end], state=state, return_hidden=True,
                          last_only=not with_loss)  # [B, end - start, D]
    if not with_loss:
        return SegmentOut(None, None, state, hidden)
    loss_sum, _, logits = head_loss(unwrap(model).head, hidden, batch["targets"][:, start:end],
                                    l2wrap_every_position=True)
    return SegmentOut(loss_sum, logits, state)


lm_loss.segmented = Segmented(lm_segment)  # type: ignore[attr-defined]


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the head's products: autocast's when it is on (as `head(hidden)` would)."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _chunk_loss_(z: torch.Tensor, targets: torch.Tensor, need_grad: bool,
                 top: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The cross-entropy sum of one chunk's fp32 logits z [C, V] against targets [C]
    (IGNORE_INDEX rows count 0). With `need_grad`, z becomes d CE / d logits in place (softmax
    minus one-hot, 0 on ignored rows). `top` (values [C], indices [C]) receives each row's largest
    logit."""
    valid = targets != IGNORE_INDEX  # [C]
    safe = torch.where(valid, targets, 0)
    picked = z.gather(1, safe.unsqueeze(1)).squeeze(1)  # [C] the targets' logits
    if top is not None:
        torch.max(z, dim=-1, out=top)
        high = top[0]
    else:
        high = z.amax(dim=-1)
    if not need_grad:
        return torch.where(valid, torch.logsumexp(z, dim=-1) - picked, 0.0).sum()
    total = z.sub_(high.unsqueeze(1)).exp_().sum(dim=-1)  # z = exp(logits - max); total [C]
    z.div_(total.unsqueeze(1))  # softmax
    rows = torch.arange(z.shape[0], device=z.device)
    z.index_put_((rows, safe), torch.where(valid, -1.0, 0.0), accumulate=True)  # - one-hot
    if not bool(valid.all()):
        z.masked_fill_(~valid.unsqueeze(1), 0.0)
    return torch.where(valid, high + total.log() - picked, 0.0).sum()


class _ChunkedHeadLoss(torch.autograd.Function):
    """loss = Σ_i CE(hidden_i Wᵀ, target_i), computed `chunk` rows at a time (module docstring).

    Forward stores d loss / d hidden [N, D] and d loss / d W [V, D] (fp32) and each row's largest
    logit and its index (L2Wrap); backward scales the former by the loss's gradient and adds
    L2Wrap's term factor · max_i at (row i, column argmax_i) through W and hidden."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                factor: float, recording: bool) -> torch.Tensor:
        # needs_input_grad says True under no_grad too: `recording` (grad mode at the call) decides
        need_h, need_w = (recording and need for need in ctx.needs_input_grad[:2])
        N, fp32, device = hidden.shape[0], torch.float32, hidden.device
        dtype = _compute_dtype(hidden, weight)
        with torch.autocast(device.type, enabled=False):
            w = weight.to(dtype)  # [V, D]
            loss = torch.zeros((), dtype=fp32, device=device)
            grad_h = torch.empty(hidden.shape, dtype=fp32, device=device) if need_h else None  # [N, D]
            grad_w = None  # [V, D] fp32, from the first chunk on
            top_val = torch.empty(N, dtype=fp32, device=device) if factor else None  # [N]
            top_idx = torch.empty(N, dtype=torch.long, device=device) if factor else None  # [N]
            for s in range(0, N, chunk):
                e = min(s + chunk, N)
                h = hidden[s:e].to(dtype)  # [C, D]
                z = torch.mm(h, w.t()).float()  # [C, V] this chunk's logits (fp32 for the softmax)
                top = (top_val[s:e], top_idx[s:e]) if factor else None
                loss += _chunk_loss_(z, targets[s:e], need_h or need_w, top)
                if not (need_h or need_w):
                    continue
                g = z.to(dtype)  # d CE / d logits [C, V]
                if need_h and g.dtype == fp32:
                    torch.mm(g, w, out=grad_h[s:e])
                elif need_h:
                    grad_h[s:e] = torch.mm(g, w)
                if need_w and grad_w is None:
                    grad_w = torch.mm(g.t(), h).float()
                elif need_w and g.dtype == fp32:
                    grad_w.addmm_(g.t(), h)
                elif need_w:
                    grad_w += torch.mm(g.t(), h)
            if need_w and grad_w is None:  # no rows at all
                grad_w = torch.zeros(weight.shape, dtype=fp32, device=device)
        ctx.grads = (grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.factor = factor
        ctx.top = (top_val, top_idx)
        if factor:
            ctx.save_for_backward(hidden, weight)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        if ctx.grads is None:
            raise RuntimeError("the chunked head loss keeps its gradients for one backward pass only")
        (grad_h, grad_w), (top_val, top_idx) = ctx.grads, ctx.top
        ctx.grads = ctx.top = None  # freed as soon as they are handed on
        g = grad_loss.float()
        hidden = weight = None
        if ctx.factor:
            hidden, weight = ctx.saved_tensors
            coef = (top_val * ctx.factor).unsqueeze(1)  # [N, 1] L2Wrap's gradient at each argmax
        if grad_h is not None:
            grad_h.mul_(g)
            if ctx.factor:
                grad_h.addcmul_(coef, weight.index_select(0, top_idx).float())  # [N, D]
            grad_h = grad_h.to(ctx.dtypes[0])
        if grad_w is not None:
            grad_w.mul_(g)
            if ctx.factor:
                grad_w.index_add_(0, top_idx, coef * hidden.float())  # [V, D]
            grad_w = grad_w.to(ctx.dtypes[1])
        return grad_h, grad_w, None, None, None, None
