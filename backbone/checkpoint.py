"""Reading and writing backbone weights in BlinkDL's official layout (.pth) or as .safetensors.

GoldFinch files use the GoldFinch code's layout (see `goldfinch_checkpoint.py`).

Official RWKV-5/6 World files hold a flat state dict (`emb.weight`, `blocks.i.att.*`, ...) and no
config: the architecture is detected from the keys and every size is inferred from the shapes, as
BlinkDL's runtime does. Our own saves use the same layout, so the runtime reads them back.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from . import goldfinch_checkpoint
from .build import build_backbone
from .config import RWKVConfig
from .errors import UserError
from .files import atomic_write
from .goldfinch import GoldFinch
from .model import RWKV


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded (bad keys or shapes), naming the file and the keys."""


class UnsupportedVersionError(CheckpointError):
    """A checkpoint of an RWKV generation this project does not implement (RWKV-4, RWKV-7)."""


_CONFIG_METADATA_KEY = "rwkv_mm_config"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth` (loaded with weights_only=True) or `.safetensors` file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path), device="cpu")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # mmap needs the zip format; the legacy format loads without it
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a flat dict of tensors (an RWKV state dict)")
    return sd


def detect_version(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> str:
    """'6', '5.2', '5.1' or '5.0' from the keys and shapes, as BlinkDL's runtime tells them apart;
    'goldfinch' for a GoldFinch file (it has the key cache's `w_kv_cache_a.weight`).

    Raises UnsupportedVersionError for RWKV-4 and RWKV-7 files.
    """
    keys = set(sd)
    if any(k.endswith(("att.r_k", "att.x_r", "att.w0")) for k in keys):
        raise UnsupportedVersionError(
            f"{source}: this is an RWKV-7 (x070) checkpoint (keys like 'att.r_k', 'att.w0'); "
            "rwkv_mm implements RWKV-5 (Eagle) and RWKV-6 (Finch) only")
    if "emb.weight" not in keys:
        raise CheckpointError(f"{source}: no 'emb.weight' key; is this an RWKV language-model state dict? "
                              f"first keys: {sorted(keys)[:8]}")
    if goldfinch_checkpoint.is_goldfinch_state_dict(sd):
        return "goldfinch"
    if any(k.endswith("att.time_maa_x") for k in keys):
        return "6"
    if not any(k.endswith("att.ln_x.weight") for k in keys):
        if any(k.endswith("att.time_first") for k in keys):
            raise UnsupportedVersionError(
                f"{source}: this is an RWKV-4 checkpoint (att.time_first, no att.ln_x); "
                "rwkv_mm implements RWKV-5 (Eagle) and RWKV-6 (Finch) only")
        raise CheckpointError(f"{source}: unrecognised RWKV layout: no 'blocks.0.att.ln_x.weight' "
                              "and no 'blocks.0.att.time_maa_x'")
    decay = sd.get("blocks.0.att.time_decay")
    if decay is None:
        raise CheckpointError(f"{source}: missing key 'blocks.0.att.time_decay'")
    if decay.squeeze().dim() == 2:
        return "5.2"
    return "5.1" if "blocks.0.att.gate.weight" in keys else "5.0"


def _shape(sd: dict[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{source}: missing key '{key}'")
    return tuple(sd[key].shape)


def config_from_state_dict(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> RWKVConfig:
    """Infer the RWKVConfig of an official-layout state dict from its keys and shapes."""
    version = detect_version(sd, source)
    if version == "goldfinch":
        return goldfinch_checkpoint.goldfinch_config(sd, _shape, CheckpointError, source)
    V, D = _shape(sd, "emb.weight", source)
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not layer_ids:
        raise CheckpointError(f"{source}: no 'blocks.<i>.*' keys")
    n_layer = max(layer_ids) + 1
    F = _shape(sd, "blocks.0.ffn.key.weight", source)[0]
    att_dim = _shape(sd, "blocks.0.att.key.weight", source)[0]
    if att_dim != D:
        raise CheckpointError(f"{source}: blocks.0.att.key.weight has {att_dim} output channels but "
                              f"n_embd is {D}; dim_att != n_embd is not supported")
    if version in ("6", "5.2"):
        H, N = _shape(sd, "blocks.0.att.time_faaaa", source)
    else:  # 5.0 / 5.1: one decay per head
        H = sd["blocks.0.att.time_decay"].numel()
        N = D // H
    extra = {}
    if version == "6":
        extra["tm_lora_rank"] = _shape(sd, "blocks.0.att.time_maa_w1", source)[1] // 5
        extra["decay_lora_rank"] = _shape(sd, "blocks.0.att.time_decay_w1", source)[1]
    return RWKVConfig(version=version[0], n_layer=n_layer, n_embd=D, vocab_size=V, head_size=N,
                      dim_ffn=F, gate="blocks.0.att.gate.weight" in sd, **extra)


def _upgrade_legacy_v5(sd: dict[str, torch.Tensor], config: RWKVConfig) -> dict[str, torch.Tensor]:
    """RWKV-5.0/5.1 per-head decay and bonus → the 5.2 per-channel layout (broadcast over the head).

    5.0 stores `time_first` (u = exp(time_first)) or `time_faaaa` (u itself) per head."""
    H, N = config.n_head, config.head_size
    out = {}
    for key, value in sd.items():
        if key.endswith("att.time_decay"):
            out[key] = value.reshape(H, 1).float().expand(H, N).clone()
        elif key.endswith("att.time_first"):
            out[key.replace("time_first", "time_faaaa")] = torch.exp(value.float()).reshape(H, 1).expand(H, N).clone()
        elif key.endswith("att.time_faaaa") and value.numel() == H:
            out[key] = value.reshape(H, 1).float().expand(H, N).clone()
        else:
            out[key] = value
    return out


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without its size-1 dims ([1, 1, D] and [D] hold the same values)."""
    return tuple(n for n in shape if n != 1)


def check_state_dict(model: RWKV | GoldFinch, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {expected[k]}"
             for k in sorted(set(expected) & set(sd))
             if _squeezed(tuple(sd[k].shape)) != _squeezed(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    if wrong:
        problems.append(f"wrong shapes {wrong[:20]}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def state_dict_to_model(sd: dict[str, torch.Tensor], config: RWKVConfig | None = None,
                        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                        source: str = "state dict") -> RWKV | GoldFinch:
    """Build an RWKV (or GoldFinch) model holding the weights of an official-layout state dict."""
    if config is None:
        config = config_from_state_dict(sd, source)
    version = detect_version(sd, source)
    if version in ("5.0", "5.1"):
        sd = _upgrade_legacy_v5(sd, config)
    elif version == "goldfinch":
        sd = goldfinch_checkpoint.from_file_layout(sd, config)
    with torch.device("meta"):
        model = build_backbone(config, init_weights=False)
    check_state_dict(model, sd, source)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    sd = {k: v.reshape(expected[k]).to(device=device, dtype=dtype) for k, v in sd.items()}
    model.load_state_dict(sd, assign=True)
    return model.eval()


def load_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> RWKV | GoldFinch:
    """Load an Eagle/Finch model from an official BlinkDL `.pth` (v5.2, v6; also 5.0/5.1), a
    GoldFinch model, or our own `.pth`/`.safetensors` saves. Sizes come from the tensor shapes."""
    path = Path(path)
    sd = read_state_dict(path)
    config = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if _CONFIG_METADATA_KEY in meta:
            config = RWKVConfig.from_dict(json.loads(meta[_CONFIG_METADATA_KEY]))
    return state_dict_to_model(sd, config, dtype=dtype, device=device, source=str(path))


def save_model(model: RWKV | GoldFinch, path: str | os.PathLike) -> Path:
    """Write the model's weights in the official layout (`.pth`, readable by BlinkDL's `rwkv`
    runtime; GoldFinch: the GoldFinch code's layout) or as `.safetensors` (with the config in its
    metadata). Atomic: temp file + rename."""
    path = Path(path)
    if model.config.is_goldfinch:
        sd = goldfinch_checkpoint.to_file_layout(model)
    else:
        sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {_CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())}
        return atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=meta))
    return atomic_write(path, lambda tmp: torch.save(sd, tmp))
