"""Adapters (LoRA, PiSSA, DoRA) through Hugging Face `peft`, on our own module tree.

`train.peft` (a `PeftConfig`) names the `nn.Linear` modules that get adapters (fnmatch patterns,
resolved here to the model's module names) and the modules kept fully trainable beside them.
peft's `inject_adapter_in_model` replaces each target in place by peft's LoRA layer (the target
becomes its `base_layer`), so every runner's code, the trainer, DDP/FSDP2, bf16 autocast and
activation checkpointing work unchanged; the parameter names gain `.base_layer.` and
`.lora_A.default.` parts (a training checkpoint holds them, and resumes into a model built the
same way). The kept modules are NOT wrapped in peft's ModulesToSaveWrapper (that would rename
them): they simply stay trainable, and `adapter_files` saves them in peft's key format.

Where it hooks in: `Trainer.__init__` (through `freezing.set_trainable`) calls
`train_config_with_adapters` (adapters in, the trainable set = adapters + kept modules); `run_stage` rebuilds with `with_adapters` under FSDP
and calls `export_adapters` (the adapter folder written, then the adapters merged into the
weights, so each runner's export writes plain official-layout weights).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rwkv_mm.errors import UserError

from .config import TrainConfig
from .peft_config import DEFAULT_PEFT_TARGETS, PeftConfig

#: peft's name of the one adapter a model holds (its parameters: `*.lora_A.default.weight`, ...)
ADAPTER_NAME = "default"
#: the adapter folder a run writes (`<run_dir>/adapter/`)
ADAPTER_DIR = "adapter"
#: the attribute of the model that records its adapters (see `Adapters`)
_RECORD = "rwkv_mm_adapters"
#: fnmatch patterns of every adapter parameter peft's LoRA layers add (DoRA: the magnitude)
_ADAPTER_PARAMS = ("*.lora_A.*", "*.lora_B.*", "*.lora_magnitude_vector.*")


@dataclass
class Adapters:
    """What a model's adapters are (kept on the model as `model.rwkv_mm_adapters`).

    Attributes:
        config: the peft `LoraConfig` they were injected with (target_modules: the module names).
        kept: names of the modules trained fully beside them (`train.peft.modules_to_save`).
        pissa_init: PiSSA only: each target's initial (lora_A, lora_B) on the CPU, to save the
            trained adapter as a plain LoRA of the original weights (peft's conversion).
        source_sha256: for an adapter loaded from a folder, its weights file's sha256 (what an
            evaluation's answers file records beside the checkpoint's).
    """

    config: Any
    kept: list[str] = field(default_factory=list)
    pissa_init: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    source_sha256: str = ""


# ----------------------------------------------------------------------------- names
def linear_names(model: nn.Module) -> list[str]:
    """Names of the model's `nn.Linear` modules (ours, `rwkv_mm.backbone`'s Linear, included)."""
    return [name for name, m in model.named_modules() if name and isinstance(m, nn.Linear)]


def match_patterns(names: list[str], patterns: list[str], key: str, strict: bool) -> list[str]:
    """The `names` some pattern matches (fnmatch, in the model's order). With `strict`, a pattern
    that matches nothing is a UserError naming `key` (a typo would silently adapt less)."""
    hits = {p: [n for n in names if fnmatch.fnmatchcase(n, p)] for p in patterns}
    if strict:
        for pattern, found in hits.items():
            if not found:
                raise UserError(f"{key} pattern {pattern!r} matches no module of this model",
                                where=key, fix=f"module names look like {', '.join(names[:4]) or '(none)'}")
    chosen = {n for found in hits.values() for n in found}
    return [n for n in names if n in chosen]


def target_module_names(model: nn.Module, cfg: PeftConfig) -> list[str]:
    """The `nn.Linear` modules `cfg.target_modules` selects. The default patterns (every time-mix
    and channel-mix projection) need not all match (Eagle 5.0 and GoldFinch have no gate, Goose
    no channel-mix receptance); patterns a recipe sets must each match."""
    strict = list(cfg.target_modules) != DEFAULT_PEFT_TARGETS
    key = "train.peft.target_modules"
    targets = match_patterns(linear_names(model), list(cfg.target_modules), key, strict)
    if not targets:
        raise UserError(f"{key} selects no nn.Linear module of {type(model).__name__}", where=key,
                        fix=f"linear modules look like {', '.join(linear_names(model)[:4])}")
    heads = [t for t in targets if t.rsplit(".", 1)[-1] == "head"]
    if heads:  # the chunked LM-head loss and the answerers multiply by head.weight directly
        raise UserError(f"{key} selects the output head {heads[0]!r}, which runs through its weight directly "
                        "and cannot take an adapter", where=key,
                        fix="train it fully with train.peft.modules_to_save instead")
    return targets


def kept_module_names(model: nn.Module, cfg: PeftConfig, targets: list[str]) -> list[str]:
    """The modules `cfg.modules_to_save` selects (each pattern must match a module with
    parameters); none may hold or be an adapter target."""
    key = "train.peft.modules_to_save"
    names = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters())]
    kept = match_patterns(names, list(cfg.modules_to_save), key, strict=True)
    kept = [n for n in kept if not any(n.startswith(k + ".") for k in kept)]  # outermost only
    for name in kept:
        inside = [t for t in targets if t == name or t.startswith(name + ".")]
        if inside:
            raise UserError(f"{name!r} is both kept fully trainable and adapted ({inside[0]})", where=key,
                            fix="take it out of train.peft.modules_to_save or of train.peft.target_modules")
    return kept


# ----------------------------------------------------------------------------- injection
def lora_config(cfg: PeftConfig, targets: list[str]):
    """peft's `LoraConfig` for `cfg` over the module names `targets` (no modules_to_save: kept
    modules stay as they are, see the module docstring)."""
    from peft import LoraConfig

    init = True
    if cfg.method == "pissa":
        init = f"pissa_niter_{cfg.pissa_niter}" if cfg.pissa_niter else "pissa"
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(targets),
                      bias="none", init_lora_weights=init, use_dora=cfg.method == "dora")


@contextlib.contextmanager
def quiet_peft():
    """peft warns about things that do not apply here (a model without a HF config, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def adapters_of(model: nn.Module) -> Adapters | None:
    """The model's adapter record, or None when it has no adapters."""
    return model.__dict__.get(_RECORD)


def inject(model: nn.Module, config, kept: list[str]) -> nn.Module:
    """Put peft's adapter layers for `config` (a LoraConfig over module names) into `model`, in
    place, and record them (`Adapters`). Returns `model`."""
    from peft import inject_adapter_in_model

    if adapters_of(model) is not None:
        raise ValueError(f"{type(model).__name__} has adapters already")
    targets = sorted(config.target_modules)  # peft shortens a long list to name suffixes in place
    with quiet_peft():
        inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    adapted = set(adapter_layers(model))
    if adapted != set(targets):  # peft also matches names by their suffix
        raise ValueError(f"peft adapted {sorted(adapted ^ set(targets))[:4]} unexpectedly")
    config.target_modules = targets  # the module names, as saved in adapter_config.json
    record = Adapters(config, list(kept))
    if str(config.init_lora_weights).startswith("pissa"):
        record.pissa_init = {name: (layer.lora_A[ADAPTER_NAME].weight.detach().to("cpu", copy=True),
                                    layer.lora_B[ADAPTER_NAME].weight.detach().to("cpu", copy=True))
                             for name, layer in adapter_layers(model).items()}
    model.__dict__[_RECORD] = record
    return model


def inject_adapters(model: nn.Module, cfg: PeftConfig) -> nn.Module:
    """`train.peft`'s adapters put into `model` (in place; PiSSA also rewrites the adapted base
    weights to their residual, so the output is unchanged). Returns `model`."""
    targets = target_module_names(model, cfg)
    kept = kept_module_names(model, cfg, targets)
    return inject(model, lora_config(cfg, targets), kept)


def adapter_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> peft LoRA layer of every adapted module."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


# ----------------------------------------------------------------------------- training
def trainable_patterns(model: nn.Module) -> list[str]:
    """`train.train_only` patterns that select the adapters and the kept modules' parameters."""
    record = adapters_of(model)
    names = [n for n, _ in model.named_parameters()]
    patterns = [p for p in _ADAPTER_PARAMS if any(fnmatch.fnmatchcase(n, p) for n in names)]
    return patterns + [f"{name}.*" for name in (record.kept if record else [])]


def train_config_with_adapters(model: nn.Module, train: TrainConfig) -> TrainConfig:
    """The trainer's hook: with `train.peft`, put the adapters into `model` and return `train`
    with `train_only` = the adapters and the kept modules (the base weights frozen; the recipe's
    and the stage's `freeze` patterns still apply). Without it, `train` unchanged."""
    if train.peft is None:
        return train
    if train.train_only:
        raise UserError(f"train.peft trains adapters, but training is limited to train_only={list(train.train_only)} "
                        "(the recipe's train.train_only or the stage's own rule, e.g. VisualRWKV stage 1 "
                        "trains only the projector)", where="train.peft",
                        fix="drop train.peft for this stage, or list fully trained modules in "
                            "train.peft.modules_to_save instead of train.train_only")
    if adapters_of(model) is None:
        inject_adapters(model, train.peft)
    return dataclasses.replace(train, train_only=trainable_patterns(model))


def with_adapters(build: Callable[[], nn.Module], train: TrainConfig) -> Callable[[], nn.Module]:
    """`build` (a stage's model builder) followed by `train.peft`'s adapter injection: the model a
    training checkpoint's state fits (what `gather_full_model` rebuilds under FSDP)."""
    if train.peft is None:
        return build
    return lambda: inject_adapters(build(), train.peft)


# ----------------------------------------------------------------------------- merging
@torch.no_grad()
def merge_adapters(model: nn.Module) -> nn.Module:
    """peft's merge of every adapter into its base weight (W + alpha/r·BA; DoRA's magnitude
    applied), each LoRA layer replaced by its base layer and the kept modules left as they are:
    a plain model again, in place. Returns `model` (unchanged without adapters)."""
    if adapters_of(model) is None:
        return model
    for name, layer in adapter_layers(model).items():
        layer.merge(adapter_names=[ADAPTER_NAME])
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    del model.__dict__[_RECORD]
    model.__dict__.pop("peft_config", None)
    return model


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain copy of `model` with its adapters merged (`model` itself when it has none)."""
    if adapters_of(model) is None:
        return model
    import copy

    return merge_adapters(copy.deepcopy(model))


def export_adapters(model: nn.Module, run_dir: str | Path) -> dict[str, str]:
    """At a stage's end (rank 0, the whole model): with adapters, write them to
    `<run_dir>/adapter/` (peft's format) and merge them into `model` in place, so the stage's
    export writes plain weights. Returns what goes into the summary ({} without adapters)."""
    if adapters_of(model) is None:
        return {}
    from .adapter_files import save_adapter

    path = save_adapter(model, Path(run_dir) / ADAPTER_DIR)
    merge_adapters(model)
    return {"adapter": str(path)}
