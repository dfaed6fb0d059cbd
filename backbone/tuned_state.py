"""State-tuned files: a learned initial state read from and written to the layout RWKV-PEFT
writes and BlinkDL's runtime reads, inside a model file or alone in a `state.pth`.

Layout (per layer i, see `initial_state.py`): `blocks.{i}.att.time_state` [H, N, N], value index
first (S[h, value, key]; the runtime transposes the last two axes into its key-first state, as
`from_file_layout` does into ours); with the token-shift vectors, `blocks.{i}.att.shift_state`
and `blocks.{i}.ffn.shift_state` [D] (ours alone: the runtime starts them from zeros).

A model file with these keys loads (`load_model`, `state_dict_to_model`) as a model holding that
state; `save_model` writes them with the weights; `save_tuned_state` writes them alone and
`load_tuned_state` puts a state file into any model of the same shape (Eagle/Finch only).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .files import atomic_write
from .initial_state import (SHIFT_STATE, STATE_KEY, TIME_STATE, add_initial_state, check_tunable,
                            from_file_layout, has_initial_state, initial_state_params, is_state_key)
from .state import RWKVState
from .weights import CheckpointError, check_weights, read_state_dict

__all__ = ["initial_state", "tuned_state_dict", "save_tuned_state", "load_tuned_state", "apply_tuned_state",
           "split_tuned_state", "has_initial_state", "add_initial_state"]


def split_tuned_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the weights, the learned-initial-state tensors) of a state dict."""
    weights = {k: v for k, v in sd.items() if not is_state_key(k)}
    return weights, {k: v for k, v in sd.items() if is_state_key(k)}


def tuned_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's learned initial state in the file layout, on the CPU ({} when it has none)."""
    return {k: p.detach().to("cpu").contiguous() for k, p in initial_state_params(model).items()}


def initial_state(model: nn.Module, batch_size: int = 1) -> RWKVState:
    """The state a fresh sequence of `model` starts from, as an explicit RWKVState (zeros when it
    holds no learned state): passing it equals passing None."""
    state = model.zero_state(batch_size)
    if not has_initial_state(model):
        return state
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            ts = getattr(block.att, TIME_STATE)
            state.wkv[i] = from_file_layout(ts).float().expand(batch_size, *ts.shape).clone()
            for entries, module in ((state.att_x, block.att), (state.ffn_x, block.ffn)):
                if hasattr(module, SHIFT_STATE):
                    entries[i] = getattr(module, SHIFT_STATE).expand(batch_size, -1).clone()
    return state


def save_tuned_state(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the model's learned initial state alone (`state.pth`: only the `time_state` and
    shift tensors), atomically. UserError when the model has none."""
    sd = tuned_state_dict(model)
    if not sd:
        raise UserError("the model holds no learned initial state (state tuning) to save", where=str(path))
    return atomic_write(Path(path), lambda tmp: torch.save(sd, tmp))


def load_tuned_state(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Read a `state.pth` (or any file with `time_state` keys, e.g. a state-tuned model: its other
    tensors are ignored) and make it `model`'s initial state; returns the model. A file without
    such keys, or one for another shape, is a UserError naming the file and the layer."""
    sd = read_state_dict(path)
    _, tuned = split_tuned_state(sd)
    if not tuned:
        raise CheckpointError(f"no 'blocks.<i>.att.time_state' keys (first keys: {sorted(sd)[:4]})",
                              where=str(path), fix="pass a state file written by state tuning (state.pth)")
    apply_tuned_state(model, tuned, str(path))
    return model


def apply_tuned_state(model: nn.Module, tuned: dict[str, torch.Tensor], source: str = "state") -> None:
    """Make the learned-state tensors `tuned` (file layout, keys `blocks.{i}.att.time_state`, ...)
    the model's initial state: every layer's `time_state` must be there with shape [H, N, N] (and
    the shift vectors, when given, [D] in every layer); a model without the shift vectors in
    `tuned` starts its token shifts from zeros. Checked before anything changes."""
    check_tunable(model.config, where=source)
    check_weights(tuned, source)
    config = model.config
    L, H, N, D = config.n_layer, config.n_head, config.head_size, config.n_embd
    shift = any(k.endswith(SHIFT_STATE) for k in tuned)
    expected = {f"blocks.{i}.att.{TIME_STATE}": (H, N, N) for i in range(L)}
    if shift:
        expected.update({f"blocks.{i}.{m}.{SHIFT_STATE}": (D,) for i in range(L) for m in ("att", "ffn")})
    for key in sorted(tuned, key=_layer_order):
        if key not in expected:
            raise CheckpointError(f"key '{key}' is for a layer this model does not have (n_layer={L})",
                                  where=source, fix="apply a state tuned for a model of this shape")
        shape = tuple(tuned[key].shape)
        if shape != expected[key]:
            raise CheckpointError(f"'{key}' has shape {list(shape)}, this model's is {list(expected[key])} "
                                  f"(n_head={H}, head_size={N}, n_embd={D})", where=source,
                                  fix="apply a state tuned for a model of this shape")
    missing = [k for k in expected if k not in tuned]
    if missing:
        raise CheckpointError(f"missing '{missing[0]}' (a state has every layer's tensors; {len(missing)} missing)",
                              where=source, fix="apply a state tuned for a model of this shape")
    add_initial_state(model, shift=shift, where=source)
    with torch.no_grad():
        for key, param in initial_state_params(model).items():
            if key in tuned:
                param.copy_(tuned[key])
            else:  # the model's shift vectors, absent from a state without them
                param.zero_()


def _layer_order(key: str) -> tuple[int, str]:
    m = STATE_KEY.match(key)
    return int(m.group(1)), key
