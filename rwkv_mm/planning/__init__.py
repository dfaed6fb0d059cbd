"""`rwkv-mm plan`: what a recipe's training needs before the machines are rented — parameters,
memory per device (DDP/FSDP, with and without grad_cp), the largest micro-batch that fits, FLOPs
per token and the time at a stated MFU — from the model built on the meta device.

    from rwkv_mm.planning import estimate   # estimate(recipe, gpus=8, gpu_mem_gb=80) -> Estimate

Modules: `models` (each runner's model on the meta device and one sequence's forward), `trace`
(what autograd keeps, traced on the meta device), `memory` (states and the activation peak),
`flops` (the FLOP meter shared with the trainer's MFU), `wkv_ops` (the WKV ops' formulas),
`devices` (GPU peak table, peak memory), `plan` (`estimate`), `report` (the table), `cli`.
Imported lazily: `import rwkv_mm.planning.devices` pulls in nothing else.
"""

from __future__ import annotations

__all__ = ["Estimate", "estimate"]


def __getattr__(name: str):
    if name in __all__:
        from importlib import import_module

        return getattr(import_module("rwkv_mm.planning.plan"), name)
    raise AttributeError(f"module 'rwkv_mm.planning' has no attribute {name!r}")
