"""`estimate(recipe)`: what one recipe's training needs per device and how long it takes.

    from rwkv_mm.planning import estimate
    e = estimate(load_recipe("visual/stage2_finch_1b6"), gpus=8, gpu_mem_gb=80)
    e.scenario("fsdp", grad_cp=True).max_micro_batch, e.hours

The model is built on the meta device and one sequence is traced (`trace`), so nothing needs
weights, data or a GPU. Memory is per device for DDP and FSDP, with and without grad_cp
(`memory`); FLOPs are the model FLOPs of a step (`flops`), and the time is max_steps of them at
`mfu` of `gpus` × `peak_tflops`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rwkv_mm.errors import UserError

from .flops import FAMILY_FORMULAS
from .memory import (Activations, ParamCounts, StateMemory, activation_peak, largest_micro_batch,
                     state_memory)
from .models import PlanModel, plan_model
from .trace import StepTrace, trace_step

GB = 1e9
STRATEGIES = ("ddp", "fsdp")
MAX_MICRO_BATCH = 1 << 16  # the largest micro-batch is reported as is, even above the recipe's batch


@dataclass
class Scenario:
    """One way to run the recipe: `strategy` and `grad_cp`, its memory per device at the recipe's
    micro-batch (`total`), whether that fits, and the largest micro-batch that does (0: none;
    it may exceed what the recipe's batch gives each device)."""

    strategy: str
    grad_cp: bool
    states: StateMemory
    activations: Activations
    micro_batch: int
    total: int
    fits: bool
    max_micro_batch: int


@dataclass
class Estimate:
    """The plan of one recipe (see the module docstring). Bytes, FLOPs and seconds."""

    runner: str
    summary: str
    notes: list[str]
    params: ParamCounts
    frozen_parts: dict[str, int]
    gpus: int
    gpu_mem: int
    budget: int
    device: str
    bf16: bool
    wkv_kernel: bool
    loss_chunk: int
    positions: int
    batch_size: int
    micro_batch: int
    accumulation: int
    max_steps: int
    flops_per_sequence: int
    flops_by_kind: dict[str, int]
    recompute_flops_per_sequence: int
    formula: str
    peak_tflops: float
    mfu: float
    scenarios: list[Scenario]
    trace: StepTrace = field(repr=False)
    plan: PlanModel = field(repr=False)

    @property
    def flops_per_token(self) -> float:
        return self.flops_per_sequence / self.positions

    def seconds(self, grad_cp: bool = False) -> float:
        """Wall time of max_steps at `mfu` (grad_cp: plus the recomputed forward of the blocks)."""
        per_seq = self.flops_per_sequence + (self.recompute_flops_per_sequence if grad_cp else 0)
        return self.max_steps * self.batch_size * per_seq / (self.gpus * self.peak_tflops * 1e12 * self.mfu)

    def scenario(self, strategy: str, grad_cp: bool) -> Scenario:
        return next(s for s in self.scenarios if s.strategy == strategy and s.grad_cp == grad_cp)

    def activation_bytes(self, micro_batch: int, grad_cp: bool, loss_chunk: int | None = None) -> int:
        """Peak activation bytes of one micro-batch under this plan's precision and WKV path,
        with another loss_chunk if given (0 = full logits)."""
        act = activation_peak(self.trace, self.plan.head, bf16=self.bf16, wkv_kernel=self.wkv_kernel,
                              grad_cp=grad_cp, loss_chunk=self.loss_chunk if loss_chunk is None else loss_chunk)
        return act.at(micro_batch)


def _param_counts(model) -> ParamCounts:
    from rwkv_mm.training.distributed import fsdp_units

    blocks = fsdp_units(model)
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    count = lambda ps, trainable: sum(p.numel() for p in ps if p.requires_grad or not trainable)  # noqa: E731
    every = list(model.parameters())
    root = [p for p in every if id(p) not in in_blocks]
    per_block = [(count(list(b.parameters()), False), count(list(b.parameters()), True)) for b in blocks] or [(0, 0)]
    return ParamCounts(count(every, False), count(every, True), max(t for t, _ in per_block),
                       max(t for _, t in per_block), count(root, False), count(root, True))


def _head_flops(plan: PlanModel, params: ParamCounts) -> int:
    """Training FLOPs of the LM head per sequence: forward, the hidden states' gradient (when
    anything below trains) and the weight's (when it trains)."""
    h = plan.head
    if h is None:
        return 0
    head_trainable = h.vocab * h.width if h.trainable else 0
    passes = 1 + int(params.trainable > head_trainable) + int(h.trainable)
    return 2 * h.rows * h.width * h.vocab * passes


def _runner_and_config(recipe: Any, runner: str | None) -> tuple[str, Any]:
    if hasattr(recipe, "runner") and hasattr(recipe, "config"):
        return recipe.runner, recipe.config
    if runner is not None:
        return runner, recipe
    from rwkv_mm.runners import list_runners

    for r in list_runners():
        if isinstance(recipe, r.config_cls):
            return r.name, recipe
    raise UserError(f"no runner takes a {type(recipe).__name__}", fix="pass runner=... or a Recipe")


def estimate(recipe: Any, *, runner: str | None = None, gpus: int = 1, gpu_mem_gb: float = 80.0,
             peak_tflops: float = 989.0, mfu: float = 0.4, device: str = "cuda", headroom: float = 0.1,
             micro_batch: int | None = None) -> Estimate:
    """Plan `recipe` (a `rwkv_mm.recipe.Recipe`, or a runner's config dataclass with `runner`).

    Args:
        gpus: data-parallel processes (one device each).
        gpu_mem_gb: memory per device; `headroom` of it is kept for the CUDA context, NCCL and the
            allocator's fragmentation (the budget is the rest).
        peak_tflops, mfu: the device's dense bf16 peak and the fraction of it the run reaches.
        device: "cuda" (bf16 autocast unless train.precision is fp32; the WKV CUDA kernel where it
            covers the head size) or "cpu" (fp32 unless bf16; the chunked WKV).
        micro_batch: override the recipe's micro-batch (default: train.micro_batch_size, or
            batch_size / gpus).
    """
    if device not in ("cuda", "cpu"):
        raise UserError(f"device {device!r}", fix="cuda or cpu")
    name, cfg = _runner_and_config(recipe, runner)
    train = cfg.train
    plan = plan_model(name, cfg)
    params = _param_counts(plan.model)
    trace = trace_step(plan.model, plan.run)
    precision = train.precision
    bf16 = precision == "bf16" or (precision == "auto" and device == "cuda")
    wkv_kernel = device == "cuda" and _kernel_covers(plan.backbone.head_size)
    loss_chunk = int(getattr(train, "loss_chunk", 0))
    micro = micro_batch or train.micro_batch_size or max(1, train.batch_size // gpus)
    accumulation = max(1, train.batch_size // (micro * gpus))
    budget = int(gpu_mem_gb * GB * (1 - headroom))
    scenarios = []
    for strategy in STRATEGIES:
        states = state_memory(params, strategy, gpus)
        for cp in (False, True):
            act = activation_peak(trace, plan.head, bf16=bf16, wkv_kernel=wkv_kernel, grad_cp=cp,
                                  loss_chunk=loss_chunk)
            total = states.total + act.at(micro)
            scenarios.append(Scenario(strategy, cp, states, act, micro, total, total <= budget,
                                      largest_micro_batch(budget, states, act, MAX_MICRO_BATCH)))
    notes = list(plan.notes)
    if bf16:
        notes.append("bf16 activations are an upper bound: saved tensors other than matmul inputs are counted "
                     "in fp32 (the CPU calibration is fp32: tests/planning/test_calibration.py)")
    if params.total < 100_000_000:
        notes.append("a model this small rarely keeps a GPU busy: expect an MFU well below the stated one")
    return Estimate(
        runner=name, summary=plan.summary, notes=notes, params=params,
        frozen_parts=plan.frozen_parts, gpus=gpus, gpu_mem=int(gpu_mem_gb * GB), budget=budget, device=device,
        bf16=bf16, wkv_kernel=wkv_kernel, loss_chunk=loss_chunk, positions=plan.positions,
        batch_size=train.batch_size, micro_batch=micro, accumulation=accumulation, max_steps=train.max_steps,
        flops_per_sequence=trace.flops_forward + trace.flops_backward + _head_flops(plan, params),
        flops_by_kind={**trace.flops_by_kind, "head": _head_flops(plan, params)},
        recompute_flops_per_sequence=trace.flops_forward_blocks, formula=FAMILY_FORMULAS.get(plan.backbone.version, ""),
        peak_tflops=peak_tflops, mfu=mfu, scenarios=scenarios, trace=trace, plan=plan)


def _kernel_covers(head_size: int) -> bool:
    from rwkv_mm.kernels.wkv_cuda import HEAD_SIZES

    return head_size in HEAD_SIZES

