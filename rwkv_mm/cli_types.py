"""Reusable `type=` functions for argparse flags: a bad value is reported by argparse itself,
naming the flag, before any work starts.

    p.add_argument("--top-k", type=non_negative_int, default=0)
    # rwkv-mm generate --top-k -1
    # rwkv-mm generate: error: argument --top-k: expected an int >= 0, got '-1'   (exit status 2)

Each function takes the flag's text and returns the parsed value or raises
`argparse.ArgumentTypeError` (argparse prefixes `argument --flag:`). Numbers must be finite
(`nan`, `inf` are refused). `int_in` / `float_in` build more of them for other ranges.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = ["int_in", "float_in", "positive_int", "non_negative_int", "finite_float",
           "non_negative_float", "positive_float", "probability", "open_probability", "seed",
           "non_empty_str", "torch_dtype", "torch_device"]

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes up to 2**64 - 1; leave room for seed + i


def _bounds_text(kind: str, min: float | None, max: float | None, gt: float | None = None,
                 lt: float | None = None) -> str:
    parts = [p for p in (f">= {min}" if min is not None else "", f"> {gt}" if gt is not None else "",
                         f"<= {max}" if max is not None else "", f"< {lt}" if lt is not None else "")
             if p]
    return kind + (" " + " and ".join(parts) if parts else "")


def int_in(min: int | None = None, max: int | None = None, name: str = "int") -> Callable[[str], int]:
    """A `type=` function for an int within [min, max] (either bound optional)."""
    expected = _bounds_text("an int", min, max)

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if (min is not None and value < min) or (max is not None and value > max):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def float_in(min: float | None = None, max: float | None = None, *, gt: float | None = None,
             lt: float | None = None, name: str = "float") -> Callable[[str], float]:
    """A `type=` function for a finite float with min <= v <= max and gt < v < lt (bounds optional)."""
    expected = _bounds_text("a finite number", min, max, gt, lt)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        ok = math.isfinite(value)
        ok = ok and (min is None or value >= min) and (max is None or value <= max)
        ok = ok and (gt is None or value > gt) and (lt is None or value < lt)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


positive_int = int_in(min=1, name="positive_int")
non_negative_int = int_in(min=0, name="non_negative_int")
finite_float = float_in(name="finite_float")
non_negative_float = float_in(min=0.0, name="non_negative_float")
positive_float = float_in(gt=0.0, name="positive_float")
probability = float_in(min=0.0, max=1.0, name="probability")  # [0, 1]
open_probability = float_in(gt=0.0, max=1.0, name="open_probability")  # (0, 1]
seed = int_in(min=0, max=MAX_SEED, name="seed")


def non_empty_str(text: str) -> str:
    """Any text but the empty string."""
    if text == "":
        raise argparse.ArgumentTypeError("expected a non-empty value, got ''")
    return text


_DTYPES = ("fp32", "bf16", "fp16")


def torch_dtype(name: str) -> Any:
    """fp32 | bf16 | fp16 → the torch dtype."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(_DTYPES)}, got {name!r}")
    return table[name]


def torch_device(name: str) -> str:
    """A device this machine has: cpu, cuda, cuda:N (N < the number of GPUs) or mps."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {name!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{name!r}: CUDA is not available on this machine; use cpu")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{name!r}: this machine has {count} GPU(s) "
                                             f"(cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{name!r}: MPS is not available on this machine; use cpu")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {name!r}")
    return name
