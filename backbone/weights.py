"""Reading weight files safely and checking their tensors: shared by every checkpoint format
(backbone files here, training, tagger and VisualRWKV files above the backbone).

`torch_load` never runs code from a file (weights only, memory-mapped); `read_state_dict` reads
`.pth` and `.safetensors`; `check_weights` / `layer_count` check what a file claims before a
model of that size is built. Every problem is a `CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded (unreadable file, bad keys, shapes, dtypes or values),
    naming the file and the keys."""


class UnsupportedVersionError(CheckpointError):
    """A checkpoint of an RWKV generation or variant this project does not implement (RWKV-4,
    RWKV-7's DeepEmbed)."""


#: What is wrong with a file that torch/safetensors cannot read at all.
NOT_A_CHECKPOINT = "truncated or not a torch/safetensors file"
#: What is wrong with a pickle that the weights-only loader refuses.
PYTHON_OBJECTS = "contains Python objects that are not tensors (refused: loading them could run code)"

_FIX = "pass a checkpoint written by rwkv-mm or RWKV-LM"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6: a zip archive
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # the older format's first pickle
# Words of the weights-only unpickler's refusals of objects (as opposed to a damaged stream).
_REFUSED_OBJECT = re.compile(r"GLOBAL|Can only (create|build)|call reduce|must be imported")


# ----------------------------------------------------------------------------- reading files
def torch_load(path: str | os.PathLike, fix: str | None = None) -> Any:
    """`torch.load` of a file the user named, on the CPU, with `weights_only=True` (tensors and
    plain data only: a pickle that would import or call anything is refused, never run).

    Zip-format files are memory-mapped: tensors are views of the file, so a shape that claims more
    data than the file holds fails without allocating it. Files of torch's pre-1.6 format are
    read twice, first without data (fake tensors) to bound every storage by the file size.
    Any failure is a CheckpointError naming the file (torch's own advice to retry with
    weights_only=False is never repeated); `fix` says what to do about a damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    fix = fix or _FIX
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not (head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC):
        raise CheckpointError(NOT_A_CHECKPOINT, where=str(path), fix=fix)
    try:
        if head.startswith(_ZIP_MAGIC):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        _check_legacy_storage_sizes(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (CheckpointError, PermissionError, MemoryError):
        raise
    except Exception as err:  # whatever torch.load raises here comes from the file's bytes
        raise _load_error(err, path, fix) from None


def _load_error(err: Exception, path: Path, fix: str) -> CheckpointError:
    """A CheckpointError for what torch.load raised on `path`."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and _REFUSED_OBJECT.search(text):
        found = re.search(r"GLOBAL (\S+)", text)
        asks = f"it asks for {found.group(1)}; " if found else ""
        return CheckpointError(PYTHON_OBJECTS, where=str(path),
                               fix=f"{asks}load only files saved as plain tensors (a state dict)")
    if isinstance(err, pickle.UnpicklingError):  # its text carries torch's unsafe-retry advice
        reason = "UnpicklingError"
    else:
        reason = _reason(err)
    return CheckpointError(f"{NOT_A_CHECKPOINT} ({reason})", where=str(path), fix=fix)


def _reason(err: BaseException) -> str:
    """'Type: first sentence' of an exception from a reader, short enough for one line."""
    first = (str(err).strip().splitlines() or [""])[0]
    first = re.split(r"(?<=\.)\s", first)[0][:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _check_legacy_storage_sizes(path: Path) -> None:
    """Refuse an old-format torch file whose tensors claim more bytes than the file holds.

    torch allocates each storage of that format at its claimed size before reading it; loading
    under FakeTensorMode first reads only the claims (no data, no allocation)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        obj = torch.load(path, map_location="cpu", weights_only=True)
    size = path.stat().st_size
    for name, tensor in _tensors_in(obj, ""):
        claimed = tensor.untyped_storage().nbytes()
        if claimed > size:
            raise CheckpointError(f"{NOT_A_CHECKPOINT} (tensor '{name}' claims {claimed:,} bytes, the file "
                                  f"holds {size:,})", where=str(path))


def _tensors_in(obj: Any, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) for every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return [(prefix, obj)]
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    return [found for k, v in items for found in _tensors_in(v, f"{prefix}.{k}" if prefix else str(k))]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth` (loaded with weights_only=True) or `.safetensors` file, on the CPU.

    Both are memory-mapped: nothing is copied until a tensor is used (see `state_dict_to_model`
    for the checks that come first)."""
    return read_state_dict_and_metadata(Path(path))[0]


def read_state_dict_and_metadata(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, safetensors metadata or {}) of a checkpoint file."""
    if path.suffix != ".safetensors":
        sd = torch_load(path)
        if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in sd.items()):
            raise CheckpointError(f"{path}: expected a flat dict of tensors (an RWKV state dict), "
                                  f"got {_describe(sd)}")
        return sd, {}
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from safetensors import SafetensorError, safe_open

    try:  # safetensors checks the header's shapes and offsets against the file's size
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, ValueError, TypeError, RuntimeError, EOFError, OverflowError) as err:
        raise CheckpointError(f"{NOT_A_CHECKPOINT} ({_reason(err)})", where=str(path),
                              fix=_FIX) from None


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        bad = next(((k, v) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))))
        return f"a dict whose entry {bad[0]!r} is a {type(bad[1]).__name__}"
    return f"a {type(obj).__name__}"


# ----------------------------------------------------------------------------- checks
def check_weights(sd: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor holds finite floating-point numbers; else CheckpointError naming the first
    bad key (dtypes first: no data read)."""
    check_weight_dtypes(sd, source)
    check_finite(sd, source)


def check_weight_dtypes(sd: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor is a dense floating-point one (integer, bool, complex and sparse tensors are
    named and refused)."""
    for key, value in sd.items():
        if value.layout != torch.strided:
            raise CheckpointError(f"tensor '{key}' is {str(value.layout).removeprefix('torch.')}; weights must "
                                  "be dense tensors", where=source)
        if not value.is_floating_point():
            raise CheckpointError(f"tensor '{key}' has dtype {str(value.dtype).removeprefix('torch.')}; "
                                  "weights must be floating-point", where=source,
                                  fix="convert the weights to float/bf16/fp16 when exporting them")


def check_finite(sd: dict[str, torch.Tensor], source: str) -> None:
    """No tensor holds NaN or +-Inf (one pass per tensor with aminmax: no copy; NaN propagates)."""
    for key, value in sd.items():
        if value.numel() and not all(torch.isfinite(x) for x in torch.aminmax(value)):
            raise CheckpointError(f"tensor '{key}' holds NaN or infinite values", where=source,
                                  fix="the weights are damaged (or come from a diverged run); use an "
                                      "earlier checkpoint")


def layer_count(sd: dict[str, torch.Tensor], source: str, prefix: str = "blocks.") -> int:
    """L from the `<prefix><i>.` keys, which must number the layers 0..L-1 without a gap (so L
    never exceeds the number of keys, whatever index a key claims); a key past a gap is named."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    first_key: dict[int, str] = {}
    for key in sd:
        if m := pattern.match(key):
            first_key.setdefault(int(m.group(1)), key)
    if not first_key:
        raise CheckpointError(f"{source}: no '{prefix}<i>.*' keys")
    for expected, index in enumerate(sorted(first_key)):
        if index != expected:
            raise CheckpointError(f"key '{first_key[index]}' is in layer {index} but layer {expected} has no "
                                  "keys (layers must be numbered 0..L-1)", where=source)
    return len(first_key)
