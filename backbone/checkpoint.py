"""Reading and writing backbone weights in BlinkDL's official layout (.pth) or as .safetensors.

GoldFinch files use the GoldFinch code's layout (see `goldfinch/checkpoint.py`), Goose files the
official x070 layout (see `goose/checkpoint.py`); reading files safely and checking their tensors
is `weights.py`'s job.

Official RWKV-5/6/7 World files hold a flat state dict (`emb.weight`, `blocks.i.att.*`, ...) and
no config: the architecture is detected from the keys and every size is inferred from the shapes,
as BlinkDL's runtime does. Our own saves use the same layout, so the runtime reads them back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .build import Backbone, build_backbone
from .config import RWKVConfig
from .errors import ConfigError
from .files import atomic_write
from .goldfinch import checkpoint as goldfinch_checkpoint
from .goose import checkpoint as goose_checkpoint
from .initial_state import check_tunable
from .tuned_state import apply_tuned_state, split_tuned_state
from .weights import (CheckpointError, UnsupportedVersionError, check_finite, check_weight_dtypes,
                      layer_count, read_state_dict_and_metadata)

__all__ = ["UnsupportedVersionError", "check_state_dict", "config_from_state_dict", "detect_version",
           "load_model", "save_model", "state_dict_to_model"]

_CONFIG_METADATA_KEY = "rwkv_mm_config"


def detect_version(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> str:
    """'7', '6', '5.2', '5.1' or '5.0' from the keys and shapes, as BlinkDL's runtime tells them
    apart; 'goldfinch' for a GoldFinch file (it has the key cache's `w_kv_cache_a.weight`).

    RWKV-7 (x070) files have `att.r_k` / `att.x_r` / `att.w0`. RWKV-5.2 stores `att.time_decay`
    per channel, [H, N]; 5.0/5.1 per head, [H] (5.1 adds the gate). As in the runtime, a second
    axis longer than 1 means 5.2, so a single-head (H = 1) 5.2 file, [1, N], is not taken for
    5.0. Raises UnsupportedVersionError for RWKV-4 and for RWKV-7's DeepEmbed variant.
    """
    keys = set(sd)
    if "emb.weight" not in keys:
        raise CheckpointError(f"{source}: no 'emb.weight' key; is this an RWKV language-model state dict? "
                              f"first keys: {sorted(keys)[:8]}")
    if goose_checkpoint.is_goose_state_dict(sd):
        goose_checkpoint.check_supported(sd, source)
        return "7"
    if goldfinch_checkpoint.is_goldfinch_state_dict(sd):
        return "goldfinch"
    if any(k.endswith("att.time_maa_x") for k in keys):
        return "6"
    if not any(k.endswith("att.ln_x.weight") for k in keys):
        if any(k.endswith("att.time_first") for k in keys):
            raise UnsupportedVersionError(
                f"{source}: this is an RWKV-4 checkpoint (att.time_first, no att.ln_x); "
                "rwkv_mm implements RWKV-5 (Eagle), RWKV-6 (Finch) and RWKV-7 (Goose)")
        raise CheckpointError(f"{source}: unrecognised RWKV layout: no 'blocks.0.att.ln_x.weight' "
                              "and no 'blocks.0.att.time_maa_x'")
    decay = sd.get("blocks.0.att.time_decay")
    if decay is None:
        raise CheckpointError(f"{source}: missing key 'blocks.0.att.time_decay'")
    if decay.dim() >= 2 and decay.shape[1] > 1:
        return "5.2"
    return "5.1" if "blocks.0.att.gate.weight" in keys else "5.0"


def _shape(sd: dict[str, torch.Tensor], key: str, source: str, ndim: int | None = None) -> tuple[int, ...]:
    """The shape of `sd[key]` (with `ndim` dims when given), or a CheckpointError naming the key."""
    if key not in sd:
        raise CheckpointError(f"{source}: missing key '{key}'")
    shape = tuple(sd[key].shape)
    if ndim is not None and len(shape) != ndim:
        raise CheckpointError(f"tensor '{key}' has shape {list(shape)}; expected {ndim} dims", where=source)
    return shape


def config_from_state_dict(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> RWKVConfig:
    """Infer the RWKVConfig of an official-layout state dict from its keys and shapes."""
    version = detect_version(sd, source)
    n_layer = layer_count(sd, source)
    try:
        if version == "goldfinch":
            return goldfinch_checkpoint.goldfinch_config(sd, n_layer, _shape, CheckpointError, source)
        if version == "7":
            return goose_checkpoint.goose_config(sd, n_layer, _shape, source)
        V, D = _shape(sd, "emb.weight", source, 2)
        F = _shape(sd, "blocks.0.ffn.key.weight", source, 2)[0]
        att_dim = _shape(sd, "blocks.0.att.key.weight", source, 2)[0]
        if att_dim != D:
            raise CheckpointError(f"{source}: blocks.0.att.key.weight has {att_dim} output channels but "
                                  f"n_embd is {D}; dim_att != n_embd is not supported")
        if version in ("6", "5.2"):
            H, N = _shape(sd, "blocks.0.att.time_faaaa", source, 2)
        else:  # 5.0 / 5.1: one decay per head
            H = sd["blocks.0.att.time_decay"].numel()
            N = D // H if H and D % H == 0 else 0
        extra = {}
        if version == "6":
            extra["tm_lora_rank"] = _shape(sd, "blocks.0.att.time_maa_w1", source, 2)[1] // 5
            extra["decay_lora_rank"] = _shape(sd, "blocks.0.att.time_decay_w1", source, 2)[1]
        return RWKVConfig(version=version[0], n_layer=n_layer, n_embd=D, vocab_size=V, head_size=N,
                          dim_ffn=F, gate="blocks.0.att.gate.weight" in sd, **extra)
    except ConfigError as err:  # sizes read from the shapes that no model has
        raise CheckpointError(f"the tensor shapes give an impossible model ({err})", where=source) from None


def _check_config_matches_keys(config: RWKVConfig, sd: dict[str, torch.Tensor], source: str) -> None:
    """A config given with the weights (safetensors metadata) agrees with their layer count and
    embedding: checked before a model of its size is built."""
    n_layer = layer_count(sd, source)
    emb = _shape(sd, "emb.weight", source, 2)
    if config.n_layer != n_layer or emb != (config.vocab_size, config.n_embd):
        raise CheckpointError(f"the saved config (n_layer={config.n_layer}, vocab_size={config.vocab_size}, "
                              f"n_embd={config.n_embd}) does not match the tensors ({n_layer} layers, "
                              f"emb.weight {list(emb)})", where=source)


def _upgrade_legacy_v5(sd: dict[str, torch.Tensor], config: RWKVConfig, source: str) -> dict[str, torch.Tensor]:
    """RWKV-5.0/5.1 per-head decay and bonus → the 5.2 per-channel layout (broadcast over the head).

    5.0 stores `time_first` (u = exp(time_first)) or `time_faaaa` (u itself) per head."""
    H, N = config.n_head, config.head_size

    def per_head(key: str, value: torch.Tensor) -> torch.Tensor:  # [H] -> [H, N]
        if value.numel() != H:
            raise CheckpointError(f"tensor '{key}' has shape {list(value.shape)}; expected one value per head "
                                  f"({H}, as in blocks.0)", where=source)
        return value.reshape(H, 1).float().expand(H, N).clone()

    out = {}
    for key, value in sd.items():
        if key.endswith("att.time_decay"):
            out[key] = per_head(key, value)
        elif key.endswith("att.time_first"):
            out[key.replace("time_first", "time_faaaa")] = per_head(key, torch.exp(value.float()))
        elif key.endswith("att.time_faaaa") and value.numel() == H:
            out[key] = per_head(key, value)
        else:
            out[key] = value
    return out


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without its size-1 dims ([1, 1, D] and [D] hold the same values)."""
    return tuple(n for n in shape if n != 1)


def check_state_dict(model: Backbone, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
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
                        source: str = "state dict") -> Backbone:
    """Build an RWKV (or GoldFinch) model holding the weights of an official-layout state dict.

    Every check comes before memory is spent on the claimed sizes: the layer count from the keys
    (0..L-1, no gap), the dtypes by key, the config; then the model is built on the meta device
    and every key and shape compared with it; then the values must be finite; only then are the
    tensors (memory-mapped views of the file, from `read_state_dict`) copied into the model.

    A state-tuned file's `blocks.{i}.att.time_state` (and shift) tensors become the model's
    learned initial state (`tuned_state.py`; Eagle/Finch only, a UserError for other families)."""
    version = detect_version(sd, source)
    if config is None:
        config = config_from_state_dict(sd, source)
    else:
        _check_config_matches_keys(config, sd, source)
    check_weight_dtypes(sd, source)
    sd, tuned = split_tuned_state(sd)
    if tuned:
        check_tunable(config, where=source)
    if version in ("5.0", "5.1"):
        sd = _upgrade_legacy_v5(sd, config, source)
    elif version == "goldfinch":
        sd = goldfinch_checkpoint.from_file_layout(sd, config)
    elif version == "7":
        sd = goose_checkpoint.from_file_layout(sd)
    with torch.device("meta"):
        model = build_backbone(config, init_weights=False)
    check_state_dict(model, sd, source)
    check_finite(sd, source)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    sd = {k: v.reshape(expected[k]).to(device=device, dtype=dtype) for k, v in sd.items()}
    model.load_state_dict(sd, assign=True)
    if tuned:
        apply_tuned_state(model, tuned, source)
    return model.eval()


def load_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> Backbone:
    """Load an Eagle/Finch/Goose model from an official BlinkDL `.pth` (v5.2, v6, x070; also
    5.0/5.1), a GoldFinch model, or our own `.pth`/`.safetensors` saves. Sizes come from the
    tensor shapes.

    Every problem with the file (unreadable, refused pickle, keys, shapes, dtypes, NaN/Inf) is
    a CheckpointError naming it; a missing file is a FileNotFoundError."""
    path = Path(path)
    sd, meta = read_state_dict_and_metadata(path)
    config = _config_from_metadata(meta, path) if _CONFIG_METADATA_KEY in meta else None
    return state_dict_to_model(sd, config, dtype=dtype, device=device, source=str(path))


def _config_from_metadata(meta: dict[str, str], path: Path) -> RWKVConfig:
    """The RWKVConfig our .safetensors saves keep in their metadata (a CheckpointError if broken)."""
    try:
        values = json.loads(meta[_CONFIG_METADATA_KEY])
        if not isinstance(values, dict):
            raise ValueError(f"a JSON {type(values).__name__}, not an object")
        return RWKVConfig.from_dict(values)
    except (ValueError, TypeError) as err:  # bad JSON (a ValueError), unknown keys, bad values
        raise CheckpointError(f"unreadable '{_CONFIG_METADATA_KEY}' metadata ({err})", where=str(path),
                              fix="re-save the model, or drop the metadata to infer the sizes "
                                  "from the tensors") from None


def save_model(model: Backbone, path: str | os.PathLike) -> Path:
    """Write the model's weights in the official layout (`.pth`, readable by BlinkDL's `rwkv`
    runtime, RWKV_V7_ON=1 for Goose; GoldFinch: the GoldFinch code's layout) or as `.safetensors` (with the config in its
    metadata). A learned initial state is written as `blocks.{i}.att.time_state` (the runtime starts
    from it). Atomic: temp file + rename."""
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
