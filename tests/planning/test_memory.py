"""The memory model's arithmetic (states per strategy, the LM head's two paths, the largest
micro-batch) and the GPU peak table."""

from __future__ import annotations

import pytest

from rwkv_mm.planning.devices import lookup_peak_tflops
from rwkv_mm.planning.memory import (Activations, HeadSpec, ParamCounts, StateMemory, _head_phase,
                                     largest_micro_batch, state_memory)


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                       ("NVIDIA L40S", 362.0), ("NVIDIA GeForce RTX 4090", 165.0),
                                       ("Some New Accelerator", None)])
def test_peak_table(name, peak):
    assert lookup_peak_tflops(name) == peak


def test_states_per_strategy():
    p = ParamCounts(total=1000, trainable=600, largest_block=100, largest_block_trainable=80,
                    root=200, root_trainable=40)
    assert state_memory(p, "ddp", 1) == StateMemory(4000, 2400, 4800, 0)
    assert state_memory(p, "fsdp", 1) == StateMemory(4000, 2400, 4800, 0)  # one process: no wrapping
    assert state_memory(p, "ddp", 4) == StateMemory(4000, 2400, 4800, 2400)  # + the gradient buckets
    fsdp = state_memory(p, "fsdp", 4)
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer) == (1000, 600, 1200)
    # the root stays gathered (200 - its 50 shard), two blocks gathered; unsharded grads of root + a block
    assert fsdp.buffers == 4 * 150 + 2 * 4 * 100 + 4 * 40 + 4 * 80


def test_chunked_head_never_holds_the_logits():
    head = HeadSpec(rows=2048, vocab=65536, width=2048, l2wrap=True, trainable=True)
    per, fixed, held = _head_phase(head, 2, 0)
    assert fixed == 0 and per >= 4 * 2048 * 65536 * 4 and held == 2048 * 65536 * 2  # logits, grads, L2Wrap
    per_c, fixed_c, held_c = _head_phase(head, 2, 1024)  # per sequence; fixed: W's gradient, a chunk
    assert held_c == 0 and 8 * per_c + fixed_c < 8 * per / 10  # micro-batch 8


def test_largest_micro_batch():
    states = StateMemory(10, 0, 0, 0)
    act = Activations({"last block": (7, 0), "LM head": (5, 3)})
    assert act.at(2) == 14 and act.phase(2) == "last block" and act.phase(0) == "LM head"
    assert largest_micro_batch(100, states, act, limit=64) == 12  # 10 + 12·7 = 94; 10 + 3 + 12·5
    assert largest_micro_batch(100, states, act, limit=4) == 4
    assert largest_micro_batch(15, states, act, limit=4) == 0
    assert largest_micro_batch(12, states, act, limit=4) == 0  # the head's fixed part alone is too much
