"""Run as a script in a fresh process: the peak memory of one training micro-batch of a small
language model on the CPU, whole or in segments (`train.segment_len`), printed as JSON.

    python segments_probe.py '{"version": "6", "n_layer": 2, "n_embd": 256, "vocab_size": 256,
                               "seq_len": 8192, "segment_len": 256, "loss_chunk": 256}'

How it measures: as tests/planning/peak_probe.py (the parent sets MALLOC_MMAP_THRESHOLD_=16384 so
the resident set follows the live tensors; a first micro-batch warms up and allocates the .grad
tensors; the second one's peak resident set minus the resident set before it is reported).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys

import torch


def measure(spec: dict) -> dict:
    """Peak bytes above the resident set of one micro-batch's forward and backward."""
    from rwkv_mm.backbone import RWKVConfig, build_backbone
    from rwkv_mm.planning.devices import peak_memory_bytes, reset_peak_memory, resident_bytes
    from rwkv_mm.training.lm_head_loss import head_loss_options, lm_loss
    from rwkv_mm.training.segments import SegmentedBackward

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = RWKVConfig(version=spec["version"], n_layer=spec["n_layer"], n_embd=spec["n_embd"],
                        vocab_size=spec["vocab_size"], head_size=spec.get("head_size", 64))
    model = build_backbone(config).train()
    T, V = spec["seq_len"], spec["vocab_size"]
    batch = {"input_ids": torch.randint(0, V, (1, T)), "targets": torch.randint(0, V, (1, T))}
    weigh = lambda loss_sum, logits: loss_sum / T  # noqa: E731
    S = spec["segment_len"]
    runner = SegmentedBackward(S, model, model, False, lm_loss.segmented, contextlib.nullcontext) if S else None

    def step() -> None:
        with head_loss_options(spec["loss_chunk"], T):
            if runner is not None:
                runner.backward(batch, weigh, last=True)
            else:
                loss_sum, _, logits = lm_loss(model, batch)
                weigh(loss_sum, logits).backward()

    cpu = torch.device("cpu")
    step()
    gc.collect()
    base = resident_bytes()
    reset_peak_memory(cpu)
    step()
    return {"peak": peak_memory_bytes(cpu) - base}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
