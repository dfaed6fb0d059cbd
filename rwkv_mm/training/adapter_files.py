"""Adapter folders in peft's own format: `adapter_config.json` (a `LoraConfig`) and
`adapter_model.safetensors` (keys `base_model.model.<module>.lora_A.weight`, ..., as
`PeftModel.save_pretrained` writes them, so `PeftModel.from_pretrained` reads ours too).

A PiSSA adapter is saved as the plain LoRA of the ORIGINAL weights it amounts to (peft's
`path_initial_model_for_weight_conversion`): rank 2r, A = [A; A₀], B = [B, -B₀], same alpha/r
scale, so it applies to the base model the run started from. The kept modules
(`train.peft.modules_to_save`) are saved whole under their own names, as peft saves
`modules_to_save`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from rwkv_mm.backbone import atomic_write
from rwkv_mm.errors import UserError

from .peft_tuning import ADAPTER_NAME, adapter_layers, adapters_of, inject, quiet_peft

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
#: what `PeftModel` puts before the base model's module names
PEFT_PREFIX = "base_model.model."


# ----------------------------------------------------------------------------- saving
def adapter_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], object]:
    """(tensors in peft's saved key format, the LoraConfig to save with them) of `model`'s
    adapters and kept modules; PiSSA converted to a LoRA of the original weights."""
    from peft import get_peft_model_state_dict

    record = adapters_of(model)
    if record is None:
        raise ValueError(f"{type(model).__name__} has no adapters to save")
    sd = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)  # names without ".default"
    config = dataclasses.replace(record.config)
    if record.pissa_init:
        sd = _pissa_as_lora(sd, record.pissa_init)
        config = dataclasses.replace(config, r=2 * config.r, lora_alpha=2 * config.lora_alpha,
                                     init_lora_weights=True)
    config.modules_to_save = list(record.kept) or None
    for name in record.kept:
        for key, value in model.get_submodule(name).state_dict().items():
            sd[f"{name}.{key}"] = value
    sd = {PEFT_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    return sd, config


def _pissa_as_lora(sd: dict[str, torch.Tensor], init: dict[str, tuple[torch.Tensor, torch.Tensor]]
                   ) -> dict[str, torch.Tensor]:
    """A trained PiSSA adapter (base W - s·B₀A₀ + s·BA) as a LoRA of the original W:
    s·[B, -B₀][A; A₀] = s·(BA - B₀A₀), so W + that = the trained model's weight."""
    out = dict(sd)
    for name, (a0, b0) in init.items():
        a, b = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
        out[a] = torch.cat([sd[a], a0.to(sd[a])], dim=0)  # [2r, in]
        out[b] = torch.cat([sd[b], -b0.to(sd[b])], dim=1)  # [out, 2r]
    return out


def save_adapter(model: nn.Module, out_dir: str | Path) -> Path:
    """Write `model`'s adapters to `out_dir` in peft's format (each file atomically: temp file +
    rename; the weights first, the config last). Returns `out_dir`."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    sd, config = adapter_state_dict(model)
    atomic_write(out_dir / WEIGHTS_NAME, lambda tmp: save_file(sd, tmp, metadata={"format": "pt"}))
    with tempfile.TemporaryDirectory() as tmp_dir:  # save_pretrained writes into a folder
        config.save_pretrained(tmp_dir)
        text = (Path(tmp_dir) / CONFIG_NAME).read_text()
    atomic_write(out_dir / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
    return out_dir


# ----------------------------------------------------------------------------- loading
def read_adapter_config(adapter_dir: str | Path):
    """The LoraConfig of an adapter folder; UserError naming the folder or the file at fault."""
    from peft import LoraConfig

    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise UserError("no such adapter folder", where=str(folder),
                        fix=f"pass a folder holding {CONFIG_NAME} and {WEIGHTS_NAME} (a run's adapter/)")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise UserError(f"the adapter folder has no {name}", where=str(folder / name),
                            fix="pass the adapter/ folder a train.peft run wrote")
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON {type(raw).__name__}, not an object")
        if raw.get("peft_type") != "LORA":
            raise ValueError(f"peft_type {raw.get('peft_type')!r}; rwkv_mm reads LoRA adapters (LoRA/PiSSA/DoRA)")
        with quiet_peft():
            config = LoraConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, OSError) as err:
        raise UserError(f"unreadable adapter config ({err})", where=str(folder / CONFIG_NAME)) from None
    return config


def _target_names(config, model: nn.Module, where: str) -> list[str]:
    """The module names the adapter's `target_modules` select in `model` (as peft matches them:
    a regular expression over whole names, or names and name suffixes), each entry checked to
    select an nn.Linear of `model`."""
    import re

    names = {n: m for n, m in model.named_modules() if n}
    targets = config.target_modules
    if isinstance(targets, str):  # a regular expression over module names (peft allows it)
        targets = [n for n in names if re.fullmatch(targets, n)]
    entries = sorted(targets or [])
    chosen = {e: [n for n, m in names.items() if (n == e or n.endswith("." + e)) and isinstance(m, nn.Linear)]
              for e in entries}
    missing = [e for e, found in chosen.items() if not found]
    targets = sorted({n for found in chosen.values() for n in found})
    if missing or not targets:
        hint = (" (a VisualRWKV adapter: pass it to `vision chat`/`vision eval` with the stage's model folder; "
                "the run's model/ holds it merged)" if any(t.startswith("rwkv.") for t in missing) else "")
        raise UserError(f"the adapter's module {missing[0] if missing else '(none)'!r} is not a linear module "
                        f"of this {type(model).__name__} ({len(missing)} of {len(entries)} do not fit)",
                        where=where, fix="apply the adapter to the base model it was trained on" + hint)
    return targets


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Put the adapter saved in `adapter_dir` onto `model` (unmerged: peft's LoRA layers run it)
    and load its kept modules' weights. Returns `model`. A base whose module names or shapes do
    not fit, and a folder missing a file, are UserErrors naming the folder/file."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    config = read_adapter_config(folder)
    where = str(folder)
    targets = _target_names(config, model, where)
    kept = list(config.modules_to_save or [])
    for name in kept:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise UserError(f"the adapter keeps module {name!r}, which this {type(model).__name__} does not have",
                            where=where, fix="apply the adapter to the base model it was trained on") from None
    try:
        sd = load_file(str(folder / WEIGHTS_NAME))
    except Exception as err:  # noqa: BLE001 — safetensors raises its own error types
        raise UserError(f"unreadable adapter weights ({err})", where=str(folder / WEIGHTS_NAME)) from None
    sd = {k.removeprefix(PEFT_PREFIX): v for k, v in sd.items()}
    kept_sd = {k: v for k, v in sd.items() if any(k.startswith(n + ".") for n in kept)}
    lora_sd = {k: v for k, v in sd.items() if k not in kept_sd}
    inject(model, dataclasses.replace(config, target_modules=targets, modules_to_save=None,
                                      init_lora_weights=True), kept)
    expected = _expected_keys(model)
    if set(lora_sd) != expected:
        wrong = sorted(set(lora_sd) ^ expected)
        raise UserError(f"the adapter's tensors do not fit this model ({len(wrong)} keys differ, e.g. {wrong[0]!r})",
                        where=str(folder / WEIGHTS_NAME), fix="apply the adapter to the base model it was trained on")
    try:
        with quiet_peft():
            set_peft_model_state_dict(model, lora_sd, adapter_name=ADAPTER_NAME)
        for name in kept:
            prefix = name + "."
            model.get_submodule(name).load_state_dict({k[len(prefix):]: v for k, v in kept_sd.items()
                                                       if k.startswith(prefix)})
    except RuntimeError as err:  # other shapes
        detail = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise UserError(f"the adapter's tensors do not fit this model ({detail[:300]})",
                        where=str(folder / WEIGHTS_NAME), fix="apply the adapter to the base model it was trained on") from None
    adapters_of(model).source_sha256 = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    return model


def _expected_keys(model: nn.Module) -> set[str]:
    """The saved-format keys (no adapter name) of every adapter tensor `model` now has."""
    from peft import get_peft_model_state_dict

    return set(get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME))


def adapted_names(model: nn.Module) -> list[str]:
    """Names of the modules that carry an adapter (for messages and tests)."""
    return list(adapter_layers(model))
