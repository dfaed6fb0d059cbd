"""Goose weights in the official x070 layout (used by `backbone/checkpoint.py`).

An x070 file is a flat state dict: `emb.weight`, `blocks.0.ln0.*`, per block `ln1`, `ln2`,
`att.{x_r,x_w,x_k,x_v,x_a,x_g}`, `att.{w0,w1,w2}`, `att.{a0,a1,a2}`, `att.{v0,v1,v2}`,
`att.{g1,g2}`, `att.{k_k,k_a,r_k}`, `att.{receptance,key,value,output}.weight`, `att.ln_x.*`,
`ffn.x_k`, `ffn.{key,value}.weight`; then `ln_out.*`, `head.weight`. No config: every size comes
from the shapes (H, N from `att.r_k`; the LoRA widths from `w1`, `a1`, `v1`, `g1`).

Layer 0 computes v_first and never reads a value-residual LoRA; RWKV-LM's trainer still builds
one there (zeros, never trained), so some files carry `blocks.0.att.v0/v1/v2` and most released
ones do not. Loading drops them; saving writes none (BlinkDL's runtime ignores them either way).

The runtime's DeepEmbed variant (`RWKV_DE_VERSION=1`: `ffn.s_emb`, `ffn.s_emb_x`, `ffn.s0/s1/s2`)
is not implemented: such a file is refused with an error naming the key.
"""

from __future__ import annotations

import re

import torch

from ..config import RWKVConfig, goose_lora_ranks
from ..weights import CheckpointError, UnsupportedVersionError

#: keys only an x070 file has (any one of them marks the layout)
MARKERS = ("att.r_k", "att.x_r", "att.w0")
_LAYER0_V_LORA = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")
_DEEP_EMBED = re.compile(r"blocks\.\d+\.ffn\.(s_emb|s_emb_x|s0|s1|s2)(\.weight)?$")


def is_goose_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is in the x070 layout (it has `att.r_k`, `att.x_r` or `att.w0`)."""
    return any(key.endswith(MARKERS) for key in sd)


def check_supported(sd: dict[str, torch.Tensor], source: str) -> None:
    """UnsupportedVersionError naming the first DeepEmbed key of an x070 state dict."""
    deep = sorted(key for key in sd if _DEEP_EMBED.match(key))
    if deep:
        raise UnsupportedVersionError(
            f"this is an RWKV-7 DeepEmbed checkpoint (key '{deep[0]}', the runtime's "
            "RWKV_DE_VERSION=1 variant); rwkv_mm implements the plain x070 blocks only, "
            "DeepEmbed is unsupported", where=source,
            fix="use a plain RWKV-7 (x070) file, e.g. an RWKV-7 World or G1 checkpoint")


def goose_config(sd: dict[str, torch.Tensor], n_layer: int, shape, source: str) -> RWKVConfig:
    """The RWKVConfig of an x070 state dict of `n_layer` layers (counted by the caller).

    `shape(sd, key, source, ndim)` returns a tensor's shape or raises CheckpointError naming the
    key. The value-residual width comes from the first layer that has `att.v1` (layer 0's is
    optional); a one-layer file without one keeps the default width (it has no such LoRA)."""
    V, D = shape(sd, "emb.weight", source, 2)
    H, N = shape(sd, "blocks.0.att.r_k", source, 2)
    att_dim = shape(sd, "blocks.0.att.key.weight", source, 2)[0]
    if att_dim != D:
        raise CheckpointError(f"blocks.0.att.key.weight has {att_dim} output channels but n_embd is "
                              f"{D}; dim_att != n_embd is not supported", where=source)
    ranks = {f"{lora}_lora_rank": shape(sd, f"blocks.0.att.{lora}1", source, 2)[1] for lora in "wag"}
    with_v = [i for i in range(1, n_layer) if f"blocks.{i}.att.v1" in sd] or (
        [0] if "blocks.0.att.v1" in sd else [])
    if with_v:
        ranks["v_lora_rank"] = shape(sd, f"blocks.{with_v[0]}.att.v1", source, 2)[1]
    elif n_layer > 1:
        raise CheckpointError("missing key 'blocks.1.att.v1' (the value-residual LoRA of every "
                              "layer after the first)", where=source)
    else:
        ranks["v_lora_rank"] = goose_lora_ranks(D)["v_lora_rank"]
    return RWKVConfig(version="7", n_layer=n_layer, n_embd=D, vocab_size=V, head_size=N,
                      dim_ffn=shape(sd, "blocks.0.ffn.key.weight", source, 2)[0], **ranks)


def from_file_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict: the file's tensors without layer 0's unused v-LoRA."""
    return {key: value for key, value in sd.items() if key not in _LAYER0_V_LORA}
