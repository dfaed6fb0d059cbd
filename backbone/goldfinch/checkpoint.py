"""GoldFinch weights in the GoldFinch training code's layout (used by `checkpoint.py`).

The file layout is the model's state dict plus, for each Finch-C2 layer, the `att.time_faaaa`
[H, N] tensor that the GoldFinch code keeps although Finch-C2 never reads it (u is replaced by
v2). Our model has no such parameter (an unused parameter breaks DDP), so saving writes zeros
there and loading drops it; its shape tells the head size N, which no other tensor of a
GoldFinch file does. A RoPE model also stores its base as the 0-d tensor `rope_base`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..config import RWKVConfig

#: The key that marks a GoldFinch state dict: the compression matrix of its key cache.
MARKER_KEY = "w_kv_cache_a.weight"
ROPE_KEY = "rope_base"
_FAAAA = re.compile(r"blocks\.(\d+)\.att\.time_faaaa$")


def is_goldfinch_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    return MARKER_KEY in sd


def goldfinch_config(sd: dict[str, torch.Tensor], n_layer: int, shape, error: type[Exception],
                     source: str) -> RWKVConfig:
    """Infer a GoldFinch RWKVConfig from a file-layout state dict of `n_layer` layers (counted
    from the keys by the caller).

    `shape(sd, key, source, ndim)` returns a tensor's shape or raises `error` naming the key."""
    V, D = shape(sd, "emb.weight", source, 2)
    L = n_layer
    gold = [i for i in range(L) if f"blocks.{i}.att.query.weight" in sd]
    if not gold or gold != list(range(gold[0], L)):
        raise error(f"{source}: GoldFinch file whose GOLD layers (with att.query.weight) are "
                    f"{gold}; expected the top layers")
    faaaa = "blocks.0.att.time_faaaa"
    if faaaa in sd:
        H, N = shape(sd, faaaa, source, 2)
    elif D % 64 == 0:
        N = 64  # the GoldFinch code's head size
    else:
        raise error(f"{source}: no '{faaaa}' to tell the head size, and D={D} is not a multiple "
                    "of the default 64; save GoldFinch models as .safetensors (config in metadata)")
    rope = sd.get(ROPE_KEY)
    if rope is not None and (rope.numel() != 1 or not rope.is_floating_point()):
        raise error(f"{source}: '{ROPE_KEY}' holds {list(rope.shape)} {rope.dtype}; expected one float "
                    "(the RoPE base)")
    return RWKVConfig(
        version="goldfinch", n_layer=L, n_embd=D, vocab_size=V, head_size=N,
        dim_ffn=shape(sd, "blocks.0.ffn.key.weight", source, 2)[0],
        tm_lora_rank=shape(sd, "blocks.0.att.time_maa_w1", source, 2)[1] // 5,
        decay_lora_rank=shape(sd, "blocks.0.att.time_decay_w1", source, 2)[1],
        n_gold_layer=L - gold[0],
        key_cache_dim=shape(sd, MARKER_KEY, source, 2)[0],
        gold_lora_rank=shape(sd, f"blocks.{gold[0]}.att.time_key_w1", source, 2)[1],
        rope_base=None if rope is None else float(rope.reshape(())),
    )


def from_file_layout(sd: dict[str, torch.Tensor], config: RWKVConfig) -> dict[str, torch.Tensor]:
    """The model's state dict: without the unused Finch-C2 `time_faaaa` and the RoPE marker."""
    s = config.first_gold_layer
    out = {}
    for key, value in sd.items():
        m = _FAAAA.match(key)
        if key == ROPE_KEY or (m and int(m.group(1)) < s):
            continue
        out[key] = value
    return out


def to_file_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights (CPU, contiguous) plus the GoldFinch code's extra keys."""
    config: RWKVConfig = model.config
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for i in range(config.first_gold_layer):
        sd[f"blocks.{i}.att.time_faaaa"] = torch.zeros(config.n_head, config.head_size,
                                                       dtype=model.emb.weight.dtype)
    if config.rope_base is not None:
        sd[ROPE_KEY] = torch.tensor(config.rope_base, dtype=torch.float64)
    return sd
