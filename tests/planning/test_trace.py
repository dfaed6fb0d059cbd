"""The meta-device trace keeps exactly the tensors a real CPU run keeps for backward (counted
here independently with saved-tensor hooks on real tensors), for each family — GoldFinch's GOLD
attention included (the trace's fused-attention stand-in keeps what the CPU's kernel keeps) —
and what it says about blocks: per-block attribution, inputs, WKV calls."""

from __future__ import annotations

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef

from planning.probe_config import probe_config
from rwkv_mm.backbone import build_backbone
from rwkv_mm.planning.models import plan_model
from rwkv_mm.planning.trace import OUTSIDE, trace_step


def real_saved_bytes(model, run) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during `run(model)` on CPU."""
    params = {StorageWeakRef(p.untyped_storage()) for p in model.parameters()}
    seen: dict = {}

    def pack(t):
        key = StorageWeakRef(t.untyped_storage())
        if key not in params:
            seen.setdefault(key, t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run(model)
    return sum(seen.values())


@pytest.mark.parametrize("version", ["5", "6", "goldfinch"])
def test_meta_trace_equals_real_cpu_run(version):
    cfg = probe_config(version, 3, 128, 512, 96)
    plan = plan_model("probe", cfg)
    trace = trace_step(plan.model, plan.run)
    torch.manual_seed(0)
    real = build_backbone(cfg.backbone)
    assert sum(t.nbytes for t in trace.tensors) == real_saved_bytes(real, plan.run)
    assert trace.n_blocks == 3
    assert {t.block for t in trace.tensors} >= {0, 1, 2}
    x_bytes = 96 * 128 * 4  # each block's input x [1, T, D] fp32 (+ its initial states; GOLD blocks: the
    assert all(x_bytes <= n <= 3 * x_bytes for n in trace.block_inputs)  # shared keys and x0 once)
    wkv_layers = 3 if version != "goldfinch" else cfg.backbone.first_gold_layer
    assert sum(len(calls) for calls in trace.wkv_calls.values()) == wkv_layers
    assert all(c.shape == (1, 96, 2, 64) for calls in trace.wkv_calls.values() for c in calls)


def test_kernel_path_and_bf16_keep_less_than_the_chunked_fp32_path():
    cfg = probe_config("6", 2, 128, 512, 512)  # long enough that the chunked form keeps more than r, k, v, w
    plan = plan_model("probe", cfg)
    trace = trace_step(plan.model, plan.run)
    _, chunked = trace.saved_by_block(bf16=False, wkv_kernel=False)
    _, kernel = trace.saved_by_block(bf16=False, wkv_kernel=True)
    _, kernel_bf16 = trace.saved_by_block(bf16=True, wkv_kernel=True)
    for a, b, c in zip(chunked, kernel, kernel_bf16):
        assert a > b > c
    assert OUTSIDE not in trace.wkv_calls


def test_bidirectional_encoder_runs_two_scans_per_block():
    from rwkv_mm.recipe import load_recipe

    recipe = load_recipe("audio/synth_tiny")
    plan = plan_model(recipe.runner, recipe.config)
    trace = trace_step(plan.model, plan.run)
    assert [len(trace.wkv_calls[i]) for i in range(trace.n_blocks)] == [2] * recipe.config.backbone.n_layer
