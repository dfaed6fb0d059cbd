"""RWKV-LM's L2Wrap: an extra gradient that pulls down each position's largest logit.

Here for loss functions that return their logits to the trainer; the chunked LM-head loss
(`lm_head_loss.py`) applies the same term itself, without the [positions, V] logits."""

from __future__ import annotations

import torch

#: the coefficient of the extra gradient: COEF · max_logit / n_positions (RWKV-LM)
L2WRAP_COEF = 1e-4


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


def l2wrap(loss: torch.Tensor, logits: torch.Tensor, n_positions: float) -> torch.Tensor:
    """Return `loss` unchanged; in backward, add 1e-4·max_logit/n_positions to the gradient of
    each position's largest logit (RWKV-LM uses n_positions = B·T), keeping logits bounded in
    long bf16 runs. The loss value itself is not changed."""
    return _L2Wrap.apply(loss, logits, L2WRAP_COEF / max(n_positions, 1))
