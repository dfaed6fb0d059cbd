"""Model FLOPs of a training step: counted from the ops a forward pass runs, with the backward
charged by rule (so recomputation under `train.grad_cp` is not counted: this is MFU, not HFU).

`FlopMeter` is a dispatch mode: under it, every matmul-like op of the *forward* pass (mm, addmm,
bmm, baddbmm, convolution, scaled-dot-product attention) adds its FLOPs, and its backward adds
the same again for each operand that needs a gradient (input and weight gradients are each one
more product of the same size; a frozen weight in a part that passes gradients on costs one, a
part under no_grad — VisualRWKV's CLIP tower — costs none). Ops run during backward (and a
checkpointed block's recomputation) are not counted. A WKV call is charged its own formula
(`wkv_ops`, 7·N² per head and token for RWKV-5/6) instead of what its implementation runs.
Elementwise ops, norms and the embedding lookup are not counted, as usual for MFU.

The same meter counts the planner's traced step and the trainer's first step, so `rwkv-mm plan`
and a run's `mfu` agree. Closed forms per family (`FAMILY_FORMULAS`) are what it adds up to for
a language model whose every weight trains (checked in tests/planning/test_flops.py).
"""

from __future__ import annotations

import math
import sys
import weakref
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .wkv_ops import describe_call, wkv_frame

#: per token, L layers of width D, head size N, channel-mix width F, vocabulary V, LoRA ranks
#: R (token shift) and Rd (decay), T the context length; `3·` = forward + backward (2×).
FAMILY_FORMULAS = {
    "5": "Eagle:     3·[2·(L·(6·D² + 2·D·F) + D·V) + 7·L·D·N]  (att r,k,v,g,o + cm r; cm k,v; head; WKV)",
    "6": "Finch:     3·[2·(L·(6·D² + 2·D·F + 10·D·R + 2·D·Rd) + D·V) + 7·L·D·N]  (+ ddlerp, decay LoRAs)",
    "goldfinch": ("GoldFinch: 3·[2·(s·(6·D² + 2·D·F + 10·D·R + 4·D·Rd) + g·(3·D² + 2·D·F + 6·D·R + 4·D·Rv)"
                  " + D·Dc + (D+Dc)·D + D·V) + 7·s·D·N + 4·g·T·D]  (s Finch-C2 layers, v2 reusing value; "
                  "g GOLD layers, attention over T keys counted whole; key cache W_a, W_b)"),
    "7": "Goose:     3·[2·N_matmul + 9·L·D·N]  (every matmul weight once per token; WKV-7)",
}
CLIP_FORMULA = "CLIP tower (frozen, no_grad, forward only): 2·N_vit·P + 4·L_vit·P²·C per image (P tokens, width C)"

_MATMULS = {"mm", "addmm", "bmm", "baddbmm"}
_CONVS = {"convolution", "_convolution", "cudnn_convolution", "convolution_overrideable"}


def _matmul_flops(name: str, args: tuple) -> tuple[int, tuple]:
    """(forward FLOPs, the two operands) of a matmul-like aten op."""
    if name in ("addmm", "baddbmm"):
        args = args[1:]  # (bias/input, a, b, ...)
    a, b = args[0], args[1]
    batch = math.prod(a.shape[:-2])
    return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1], (a, b)


def _conv_flops(args: tuple, out: torch.Tensor) -> tuple[int, tuple]:
    x, w = args[0], args[1]
    per_output = math.prod(w.shape[1:])  # C_in/groups · kernel
    return 2 * out.numel() * per_output, (x, w)


def _attention_flops(args: tuple) -> tuple[int, tuple]:
    q, k, v = args[0], args[1], args[2]  # [B, H, Tq, N], [B, H, Tk, N]
    return 4 * math.prod(q.shape[:-2]) * q.shape[-2] * k.shape[-2] * q.shape[-1], (q, k, v)


class FlopMeter(TorchDispatchMode):
    """Counts model FLOPs of what runs under it (see the module docstring).

    Attributes:
        forward, backward: FLOPs of the forward pass and charged for its backward.
        by_kind: FLOPs (forward + backward) by kind: "matmul", "conv", "attention", "wkv", and
            "forward only" (matmuls and convolutions under no_grad).
        wkv_calls: the WKV calls seen (`WkvCall`, shapes and what a kernel would save).
    """

    def __init__(self) -> None:
        super().__init__()
        self.forward = 0
        self.backward = 0
        self.by_kind: Counter[str] = Counter()
        self.wkv_calls: list = []
        self._seen_r: set[int] = set()  # id() of each counted WKV call's r, while it lives

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def _add(self, kind: str, fwd: int, bwd: int) -> None:
        self.forward += fwd
        self.backward += bwd
        self.by_kind[kind] += fwd + bwd

    def _note_wkv(self, frame) -> None:
        r = frame.f_locals.get("r")
        if r is None or id(r) in self._seen_r:
            return
        self._seen_r.add(id(r))
        weakref.finalize(r, self._seen_r.discard, id(r))  # a later tensor may reuse the id
        call = describe_call(frame)
        self.wkv_calls.append(call)
        fwd = call.forward_flops()
        self._add("wkv", fwd, 2 * fwd if call.requires_grad else 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if torch._C._current_autograd_node() is not None:  # backward, or a recomputation in it
            return out
        frame = wkv_frame(sys._getframe(1))
        if frame is not None:  # inside a WKV op: charged by its formula, once per call
            self._note_wkv(frame)
            return out
        name = func.overloadpacket.__name__
        if name in _MATMULS:
            (fwd, operands), kind = _matmul_flops(name, args), "matmul"
        elif name in _CONVS:
            (fwd, operands), kind = _conv_flops(args, out), "conv"
        elif name.startswith("_scaled_dot_product") and "backward" not in name:
            (fwd, operands), kind = _attention_flops(args), "attention"
        else:
            return out
        if kind == "attention":  # its backward: about twice its forward when anything needs a gradient
            bwd = 2 * fwd if any(t.requires_grad for t in operands) else 0
        else:  # one more product of the same size per operand that needs a gradient
            self._operands_seen(operands)
            bwd = fwd * sum(1 for t in operands if t.requires_grad)
        if not torch.is_grad_enabled():  # a part run under no_grad (VisualRWKV's CLIP tower)
            kind, bwd = "forward only", 0
        self._add(kind, fwd, bwd)
        return out

    def _operands_seen(self, operands: tuple) -> None:
        """Called with the operands of every counted matmul/convolution (a hook for subclasses)."""
