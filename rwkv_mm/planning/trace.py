"""One training forward pass traced without memory: what autograd keeps for backward, block by
block, and the FLOPs the step costs.

The model is built on the meta device and run there (shapes and dtypes without bytes), so the
trace runs the real model code — the same saved tensors; attention as the CPU's fused kernel
(`_FusedAttention`: like a GPU's flash attention it keeps no T×T matrix) — for a 1.6B model in
seconds and no memory. Every tensor autograd saves is recorded once per storage
(views share one), with:

- the block it was saved in (every entry of a `blocks` ModuleList, as FSDP shards them) or
  "outside" (embedding, projector, head, loss, GoldFinch's key cache);
- whether a WKV implementation saved it (a GPU plan replaces those by what the CUDA kernel keeps);
- how often a matmul saved it as an operand (under bf16 autocast that copy is bf16) and how often
  anything else did (counted at 4 bytes: an upper bound, see `StoredTensor.bytes`).

A block's inputs are recorded too: with `train.grad_cp` they are all a block keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

from rwkv_mm.errors import UserError
from rwkv_mm.training.distributed import fsdp_units

from .flops import FlopMeter
from .wkv_ops import WkvCall, wkv_frame

OUTSIDE = -1  # the block index of what is saved outside every block


@dataclass
class StoredTensor:
    """One storage autograd keeps: `nbytes` as traced (fp32 activations), `block` (or OUTSIDE),
    `in_wkv` (saved by a WKV implementation), `float32`, and how many times a matmul (`mm_saves`)
    or another op (`other_saves`) saved it."""

    nbytes: int
    block: int
    in_wkv: bool
    float32: bool
    mm_saves: int = 0
    other_saves: int = 0

    def bytes(self, bf16: bool) -> int:
        """Bytes it takes in a run: as traced in fp32; under bf16 autocast a matmul's copy of an
        fp32 operand is bf16 (2 bytes per element) and any other op's saved fp32 tensor is
        counted at 4 bytes (autocast keeps norms, exp, pow, softmax in fp32 and promotes
        bf16·fp32 to fp32; some elementwise outputs of bf16 matmuls are really bf16, so this is
        an upper bound)."""
        if not bf16 or not self.float32:
            return self.nbytes
        numel = self.nbytes // 4
        return (2 * numel if self.mm_saves else 0) + (4 * numel if self.other_saves else 0)


@dataclass
class StepTrace:
    """What one forward pass of batch 1 keeps for backward, and its FLOPs.

    Attributes:
        tensors: every saved storage (`StoredTensor`).
        block_inputs: per block, the bytes of its tensor arguments (what grad_cp keeps).
        block_weight_numel: per block (and OUTSIDE), elements of the weights a matmul saved
            (bf16 autocast keeps a bf16 copy of each for backward).
        wkv_calls: per block, its WKV calls.
        flops_forward, flops_backward, flops_by_kind: the `FlopMeter` count;
            flops_forward_blocks: the part of the forward inside the blocks.
    """

    n_blocks: int
    tensors: list[StoredTensor] = field(default_factory=list)
    block_inputs: list[int] = field(default_factory=list)
    block_weight_numel: dict[int, int] = field(default_factory=dict)
    wkv_calls: dict[int, list[WkvCall]] = field(default_factory=dict)
    flops_forward: int = 0
    flops_backward: int = 0
    flops_forward_blocks: int = 0
    flops_by_kind: dict[str, int] = field(default_factory=dict)

    def saved_by_block(self, bf16: bool, wkv_kernel: bool) -> tuple[int, list[int]]:
        """(bytes saved outside the blocks, bytes saved in each block) for a run in bf16 autocast
        or fp32, with the WKV's saved tensors those of the CUDA kernel (`wkv_kernel`) or of the
        chunked form as traced. bf16 adds each block's bf16 weight copies."""
        per = [0] * self.n_blocks
        outside = 0
        for t in self.tensors:
            if wkv_kernel and t.in_wkv:
                continue
            if t.block == OUTSIDE:
                outside += t.bytes(bf16)
            else:
                per[t.block] += t.bytes(bf16)
        if wkv_kernel:  # what the CUDA kernel keeps instead: r, k, v (bf16 under autocast), w, state
            for block, calls in self.wkv_calls.items():
                kept = sum(c.kernel_saved_bytes(2 if bf16 else 4) for c in calls if c.op.kernel_saves)
                if block == OUTSIDE:
                    outside += kept
                else:
                    per[block] += kept
        if bf16:
            for block, numel in self.block_weight_numel.items():
                if block == OUTSIDE:
                    outside += 2 * numel
                else:
                    per[block] += 2 * numel
        return outside, per


class _TraceMeter(FlopMeter):
    """The FLOP meter, also noting the block of each WKV call and which storages matmuls take as
    operands while their partner needs a gradient (autograd saves those operands)."""

    def __init__(self, current: list[int]) -> None:
        super().__init__()
        self.current = current  # [index of the block running now, or OUTSIDE]
        self.mm_saved: dict[StorageWeakRef, int] = {}
        self.wkv_blocks: list[int] = []
        self.blocks_forward = 0  # forward FLOPs inside the blocks (what grad_cp runs again)

    def _add(self, kind: str, fwd: int, bwd: int) -> None:
        super()._add(kind, fwd, bwd)
        if self.current[0] != OUTSIDE:
            self.blocks_forward += fwd

    def _note_wkv(self, frame) -> None:
        before = len(self.wkv_calls)
        super()._note_wkv(frame)
        if len(self.wkv_calls) > before:
            self.wkv_blocks.append(self.current[0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
            # a WKV implementation's data-dependent branch (WKV-7's chunked form asks whether
            # its decays allow the factored path): meta tensors have no values, take the usual case
            if args[0].dtype == torch.bool and wkv_frame() is not None:
                return True
            raise UserError("the planner traces on the meta device, and this model reads a tensor's "
                            "value while running (a data-dependent branch outside the WKV ops)",
                            fix="report it: its runner's planner (rwkv_mm/planning/models.py) must avoid it")
        return super().__torch_dispatch__(func, types, args, kwargs)

    def _operands_seen(self, operands: tuple) -> None:
        for i, t in enumerate(operands[:2]):
            if operands[1 - i].requires_grad:
                key = StorageWeakRef(t.untyped_storage())
                self.mm_saved[key] = self.mm_saved.get(key, 0) + 1


class _FusedAttention(TorchFunctionMode):
    """Scaled-dot-product attention as the fused CPU kernel (out + logsumexp kept, no T×T matrix,
    as a GPU's flash attention): on the meta device PyTorch would take the math path, whose
    autograd keeps the attention matrix."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
        given = {**dict(zip(names, args)), **kwargs}
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            given["query"], given["key"], given["value"], given.get("dropout_p", 0.0),
            given.get("is_causal", False), attn_mask=given.get("attn_mask"), scale=given.get("scale"))[0]


def trace_step(model: nn.Module, run: Callable[[nn.Module], None]) -> StepTrace:
    """Trace `run(model)` — one forward pass of a batch of 1 — for `model` on the meta device
    (its parameters' requires_grad set as the run will; `run` creates its inputs on the default
    device, which is meta here). Returns the `StepTrace`."""
    blocks = fsdp_units(model)
    trace = StepTrace(n_blocks=len(blocks), block_inputs=[0] * len(blocks))
    current = [OUTSIDE]
    found: dict[StorageWeakRef, StoredTensor] = {}
    inputs_seen: set[StorageWeakRef] = set()
    params = {StorageWeakRef(p.untyped_storage()): p for p in model.parameters()}
    param_saved: dict[StorageWeakRef, int] = {}
    meter = _TraceMeter(current)

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = StorageWeakRef(t.untyped_storage())
        if key in params:
            param_saved.setdefault(key, current[0])
            return t
        if key not in found:
            found[key] = StoredTensor(t.untyped_storage().nbytes(), current[0], wkv_frame() is not None,
                                      t.dtype == torch.float32)
        found[key].other_saves += 1
        return t

    def enter(index: int):
        def hook(_module, args, kwargs):
            current[0] = index
            for a in (*args, *kwargs.values()):
                if isinstance(a, torch.Tensor):
                    key = StorageWeakRef(a.untyped_storage())
                    if key not in params and key not in inputs_seen:
                        inputs_seen.add(key)
                        trace.block_inputs[index] += a.untyped_storage().nbytes()
        return hook

    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(enter(i), with_kwargs=True))
        handles.append(block.register_forward_hook(lambda *_: current.__setitem__(0, OUTSIDE)))
    try:
        with torch.device("meta"), _FusedAttention(), meter, \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run(model)
    finally:
        for h in handles:
            h.remove()
    _settle(trace, found, meter, param_saved, params)
    return trace


def _settle(trace: StepTrace, found: dict, meter: _TraceMeter, param_saved: dict, params: dict) -> None:
    """Move the counts into `trace`: matmul saves out of the other saves, weights a matmul saved,
    WKV calls by block, FLOPs."""
    for key, stored in found.items():
        mm = meter.mm_saved.get(key, 0)
        stored.mm_saves = min(mm, stored.other_saves)
        stored.other_saves -= stored.mm_saves
    trace.tensors = list(found.values())
    for key, block in param_saved.items():
        if meter.mm_saved.get(key):
            trace.block_weight_numel[block] = trace.block_weight_numel.get(block, 0) + params[key].numel()
    for call, block in zip(meter.wkv_calls, meter.wkv_blocks):
        trace.wkv_calls.setdefault(block, []).append(call)
    trace.flops_forward, trace.flops_backward = meter.forward, meter.backward
    trace.flops_forward_blocks = meter.blocks_forward
    trace.flops_by_kind = dict(meter.by_kind)

