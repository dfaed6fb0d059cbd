"""RWKV-LM's L2Wrap: an extra gradient that pulls down each position's largest logit."""

from __future__ import annotations

import torch


class _L2Wrap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss: torch.Tensor, logits: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.save_for_backward(logits)
        ctx.factor = factor
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        (logits,) = ctx.saved_tensors  # [..., V]
        top, idx = logits.max(dim=-1, keepdim=True)
        grad_logits = torch.zeros_like(logits).scatter_(-1, idx, top * ctx.factor)
        return grad_loss, grad_logits, None


def l2wrap(loss: torch.Tensor, logits: torch.Tensor, n_positions: int) -> torch.Tensor:
    """Return `loss` unchanged; in backward, add 1e-4·max_logit/n_positions to the gradient of
    each position's largest logit (RWKV-LM uses n_positions = B·T), keeping logits bounded in
    long bf16 runs. The loss value itself is not changed."""
    return _L2Wrap.apply(loss, logits, 1e-4 / max(n_positions, 1))
