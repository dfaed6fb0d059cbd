"""Processes under torchrun: joining the group, wrapping the model (DDP or FSDP2), and the whole
(unsharded) model and optimizer states a checkpoint or an export needs.

The trainer holds the wrapped model; runners only call `gather_full_model` at the end of a stage
(every process, the same collective), and rank 0 alone gets the whole model back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def maybe_init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL with one GPU per
    process (LOCAL_RANK) when CUDA is available, gloo on CPUs. Returns True when distributed."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The residual blocks FSDP shards one by one: every entry of every `blocks` ModuleList,
    wherever it sits (an LM's `blocks` — Eagle/Finch `Block`s or GoldFinch `GoldFinchBlock`s —,
    a VisualRWKV's `rwkv.blocks`, an AudioRWKV's `blocks`). What lies outside them (embedding,
    GoldFinch's key-cache matrices, head, front ends) goes to the root unit."""
    units: list[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "blocks":
            units.extend(module)
    return units


def wrap_model(model: nn.Module, strategy: str, device: torch.device) -> tuple[nn.Module, bool]:
    """(the module to call in training, whether its parameters are sharded) for `model` under
    the current process group: FSDP2 (`strategy` "fsdp": each block sharded, then the rest, in
    place), DDP (a wrapper), or the model itself with one process.

    Under FSDP, frozen parameters outside the blocks (a VisualRWKV's CLIP tower, a frozen
    embedding) stay whole on every process: they have no gradient or optimizer state to shard,
    the root unit would otherwise gather them at every step, and a frozen part may run outside
    the model's forward (the feature cache runs the tower alone, which sharded weights refuse)."""
    _, world = rank_and_world()
    if world <= 1:
        return model, False
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard
        units = fsdp_units(model)
        for block in units:
            fully_shard(block)
        in_units = {id(p) for block in units for p in block.parameters()}
        frozen = {p for p in model.parameters() if not p.requires_grad and id(p) not in in_units}
        fully_shard(model, **({"ignored_params": frozen} if frozen else {}))
        return model, True
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None), False


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The whole model state dict. Sharded (FSDP), every process must call it (it gathers the
    shards) and only rank 0 receives the tensors (on the CPU; the others get {})."""
    if not sharded:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    return get_model_state_dict(model, options=_full_options())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> dict:
    """The whole optimizer state (collective when sharded, as `full_model_state`)."""
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_full_states(model: nn.Module, optimizer: torch.optim.Optimizer, ckpt: dict[str, Any],
                     sharded: bool) -> None:
    """Load a checkpoint's whole model and optimizer states, whichever strategy and world size
    wrote them (the optimizer's parameters numbered, as one process or DDP writes them, or named,
    as FSDP does): into a sharded model every process loads the whole and keeps its shards.
    A state that does not fit raises KeyError, ValueError or RuntimeError."""
    named = optimizer_state_by_name(model, optimizer, ckpt["optimizer"])
    if not sharded:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(optimizer_state_by_number(model, optimizer, named))
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, ckpt["model"], options=options)
    set_optimizer_state_dict(model, optimizer, named, options=options)


def _numbered_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """The names of the optimizer's parameters, group by group (`optimizer.state_dict()` numbers
    them 0, 1, ... in this order)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """An optimizer state dict with its parameters named (FSDP's full form); `state` may number
    them (`optimizer.state_dict()`), as `optimizer`, built the same way, numbers its own."""
    groups = state["param_groups"]
    if all(isinstance(p, str) for g in groups for p in g["params"]):
        return state
    live = _numbered_names(model, optimizer)
    if [len(g["params"]) for g in groups] != [len(g) for g in live]:
        raise ValueError(f"the optimizer groups hold {[len(g['params']) for g in groups]} parameters, "
                         f"this model's {[len(g) for g in live]}")
    name_of = {number: name for g, names in zip(groups, live) for number, name in zip(g["params"], names)}
    return {"state": {name_of[number]: value for number, value in state["state"].items()},
            "param_groups": [{**g, "params": [name_of[n] for n in g["params"]]} for g in groups]}


def optimizer_state_by_number(model: nn.Module, optimizer: torch.optim.Optimizer, named: dict) -> dict:
    """The inverse of `optimizer_state_by_name`: what `optimizer.load_state_dict` takes."""
    number_of = {name: k for k, name in enumerate(n for g in _numbered_names(model, optimizer) for n in g)}
    return {"state": {number_of[name]: value for name, value in named["state"].items()},
            "param_groups": [{**g, "params": [number_of[n] for n in g["params"]]} for g in named["param_groups"]]}


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over the processes, in place (unchanged with one process)."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(x)
    return x


def gather_full_model(trainer, rebuild: Callable[[], nn.Module]) -> nn.Module | None:
    """The trained model, whole, on rank 0 (None on the other processes): what a stage exports.

    Unsharded, it is the trainer's model itself. Under FSDP every process must call this (the
    shards are gathered, a collective); rank 0 loads them into a fresh unsharded copy from
    `rebuild()` (the stage's own model builder)."""
    if not trainer.sharded:
        return trainer.model if trainer.rank == 0 else None
    state = trainer.full_model_state_dict()  # collective
    if trainer.rank != 0:
        return None
    model = rebuild()
    model.load_state_dict(state)
    return model
