"""Run as a script in a fresh process: the peak memory of one training micro-batch (forward,
loss, backward) of a small language model on the CPU, printed as JSON.

    python peak_probe.py '{"version": "6", "n_layer": 2, "n_embd": 128, "vocab_size": 256,
                           "seq_len": 256, "batch": 1, "grad_cp": false, "loss_chunk": 0}'

(`loss_chunk` > 0: the trainer's chunked LM-head loss over that many positions at a time.)

How it measures (why this is reliable on the CPU): the parent starts this process with
MALLOC_MMAP_THRESHOLD_=16384, so glibc serves every allocation of 16 KiB or more — every tensor
that matters — with its own mmap and unmaps it when the tensor is freed: the resident set then
follows the live tensors (with the default dynamic threshold, freed memory stays in malloc's
arenas and is reused invisibly, so a peak-RSS delta would miss it). One micro-batch runs first
(libraries warm up, the parameters' .grad tensors are allocated: the trainer accumulates into
them across micro-batches), then the peak is reset (`/proc/self/clear_refs` 5 resets VmHWM; the
lifetime `ru_maxrss` of getrusage cannot be reset, so it would still hold import and build
peaks) and the second micro-batch's peak resident set (VmHWM) minus the resident set before it
is the activations' peak. One thread, so no per-thread scratch buffers vary between runs.
"""

from __future__ import annotations

import gc
import json
import sys

import torch
import torch.nn.functional as F


def measure(spec: dict) -> dict:
    """Peak bytes above the resident set of one fwd+bwd micro-batch (see the module docstring)."""
    from rwkv_mm.backbone import RWKVConfig, build_backbone
    from rwkv_mm.planning.devices import peak_memory_bytes, reset_peak_memory, resident_bytes

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = RWKVConfig(version=spec["version"], n_layer=spec["n_layer"], n_embd=spec["n_embd"],
                        vocab_size=spec["vocab_size"], head_size=spec.get("head_size", 64))
    model = build_backbone(config)
    if spec["grad_cp"]:
        from rwkv_mm.backbone import set_grad_checkpointing

        set_grad_checkpointing(model, True)
    B, T, V = spec["batch"], spec["seq_len"], spec["vocab_size"]
    tokens = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))

    chunk = spec.get("loss_chunk", 0)

    def step() -> None:
        if chunk:  # the trainer's chunked head loss: no [B·T, V] logits
            from rwkv_mm.training.lm_head_loss import head_loss, head_loss_options

            hidden, _ = model(tokens, return_hidden=True)  # [B, T, D]
            with head_loss_options(chunk):
                loss, _, _ = head_loss(model.head, hidden, targets)
        else:
            logits, _ = model(tokens)  # [B, T, V], alive through backward as in the trainer
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
        loss.backward()

    cpu = torch.device("cpu")
    step()
    gc.collect()
    base = resident_bytes()  # VmRSS
    reset_peak_memory(cpu)  # VmHWM := VmRSS
    step()
    return {"peak": peak_memory_bytes(cpu) - base}  # VmHWM: the run records' CPU peak memory too


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
