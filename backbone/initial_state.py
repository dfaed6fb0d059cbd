"""A learned initial state held by an Eagle/Finch language model (state tuning, RWKV-PEFT's
`time_state`): what a fresh sequence starts from instead of zeros.

Each block's time mix holds `time_state`, an `nn.Parameter` [H, N, N] in the layout of the files
(RWKV-PEFT writes it, BlinkDL's runtime reads it): S[h, value, key], the transpose of our key-first
`RWKVState.wkv` (the runtime does `time_state.transpose(1, 2)` into its state). Optionally
(`shift=True`) the time mix and the channel mix hold `shift_state` [D] each, the token-shift
vectors of the position before the first (our extension: BlinkDL's runtime ignores them).
In a state dict they are `blocks.{i}.att.time_state`, `blocks.{i}.att.shift_state`,
`blocks.{i}.ffn.shift_state`.

A block reads its own parameters inside its forward pass (`layer_start`), so a sharded (FSDP2)
block has them gathered there; the model passes a state whose entries are None for "start from
the learned state" (`fresh_state`). This module imports no model class (the model imports it).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .errors import UserError
from .state import RWKVState

#: parameter names on a block's `att` (wkv, shift) and `ffn` (shift) modules
TIME_STATE = "time_state"
SHIFT_STATE = "shift_state"
#: state-dict keys of a learned initial state: (layer, module, name)
STATE_KEY = re.compile(r"^blocks\.(\d+)\.(att|ffn)\.(time_state|shift_state)$")
#: the families whose files BlinkDL's runtime reads `time_state` from
TUNABLE_VERSIONS = ("5", "6")


def to_file_layout(wkv: torch.Tensor) -> torch.Tensor:
    """Our key-first WKV state [..., key, value] -> the files' value-first [..., value, key]."""
    return wkv.transpose(-1, -2)


def from_file_layout(time_state: torch.Tensor) -> torch.Tensor:
    """A file's `time_state` [..., value, key] -> our key-first WKV state [..., key, value]."""
    return time_state.transpose(-1, -2)


def is_state_key(key: str) -> bool:
    """Whether a state-dict key is part of a learned initial state."""
    return STATE_KEY.match(key) is not None


def check_tunable(config, where: str | None = None) -> None:
    """UserError unless `config` is an Eagle/Finch model (the families whose `time_state` the
    runtime reads: its x070 code starts from zeros, GoldFinch's GOLD layers have no WKV state)."""
    if config.version in TUNABLE_VERSIONS:
        return
    family = {"7": "Goose (RWKV-7)", "goldfinch": "GoldFinch"}.get(config.version, f"version {config.version}")
    why = ("BlinkDL's runtime reads no time_state from x070 files" if config.version == "7"
           else "its GOLD layers keep no WKV state to start from")
    raise UserError(f"a learned initial state (state tuning, time_state) is for Eagle and Finch only, not "
                    f"{family}: {why}", where=where,
                    fix="use an Eagle (5) or Finch (6) model, or tune it with train.peft instead")


def has_initial_state(model: nn.Module) -> bool:
    """Whether a language model holds a learned initial state."""
    blocks = getattr(model, "blocks", ())
    return len(blocks) > 0 and hasattr(blocks[0].att, TIME_STATE)


def has_shift_state(model: nn.Module) -> bool:
    """Whether its learned initial state includes the token-shift vectors."""
    return has_initial_state(model) and hasattr(model.blocks[0].att, SHIFT_STATE)


def add_initial_state(model: nn.Module, shift: bool = False, where: str | None = None) -> None:
    """Give an Eagle/Finch model a learned initial state, all zeros (so its output is unchanged),
    on its device and in its dtype; `shift` adds the token-shift vectors. A model that has one
    keeps it (and gets the shift vectors when asked). UserError for other families."""
    config = model.config
    check_tunable(config, where)
    H, N, D = config.n_head, config.head_size, config.n_embd
    like = dict(device=model.emb.weight.device, dtype=model.emb.weight.dtype)
    for block in model.blocks:
        if not hasattr(block.att, TIME_STATE):
            block.att.register_parameter(TIME_STATE, nn.Parameter(torch.zeros(H, N, N, **like)))  # [H, value, key]
        if shift and not hasattr(block.att, SHIFT_STATE):
            for module in (block.att, block.ffn):
                module.register_parameter(SHIFT_STATE, nn.Parameter(torch.zeros(D, **like)))  # [D]


def initial_state_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """{state-dict key relative to the model: parameter} of its learned initial state."""
    return {name: p for name, p in model.named_parameters() if is_state_key(name)}


def fresh_state(model: nn.Module, batch_size: int) -> RWKVState:
    """The state a forward pass starts from when none is passed: zeros, or — for a model with a
    learned initial state — entries of None that each block fills from its own parameters."""
    if not has_initial_state(model):
        return model.zero_state(batch_size)
    L = model.config.n_layer
    return RWKVState([None] * L, [None] * L, [None] * L)


def layer_start(block: nn.Module, state: RWKVState, batch_size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(att_x [B, D], wkv [B, H, N, N] fp32 key-first, ffn_x [B, D]) that block `block.layer_id`
    starts from: the entries of `state`, or, where they are None (`fresh_state`), the block's
    learned state expanded over the batch (gradients reach the parameters)."""
    i = block.layer_id
    if state.wkv[i] is not None:
        return state.att_x[i], state.wkv[i], state.ffn_x[i]
    ts = getattr(block.att, TIME_STATE)  # [H, value, key]
    wkv = from_file_layout(ts).float().unsqueeze(0).expand(batch_size, *ts.shape).contiguous()
    shifts = []
    for module in (block.att, block.ffn):
        vec = getattr(module, SHIFT_STATE, None)  # [D]
        shifts.append(vec.unsqueeze(0).expand(batch_size, -1) if vec is not None
                      else ts.new_zeros(batch_size, block.ln1.weight.shape[0]))
    return shifts[0], wkv, shifts[1]


def adopt_initial_state_on_load(model: nn.Module) -> None:
    """Let `model.load_state_dict` take a state dict that has a learned initial state the model
    lacks (an exported state-tuned model, a trainer's gathered state): a load-state-dict
    pre-hook adds the parameters first."""
    model.register_load_state_dict_pre_hook(_add_state_before_load)


def _add_state_before_load(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix) and is_state_key(k[len(prefix):])]
    if keys:
        add_initial_state(module, shift=any(k.endswith(SHIFT_STATE) for k in keys))
