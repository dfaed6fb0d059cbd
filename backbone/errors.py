"""The one error type for a user's mistake, and the checks every config dataclass runs.

`UserError` is what the `rwkv-mm` command line prints as one line (`rwkv-mm: error: ...`, exit
status 2); any other exception is a bug in rwkv_mm (exit status 1, traceback with `--debug`).
Its text says what is wrong, where (file, key, line or sample id) and, where it helps, what to
do: `UserError("not an RWKV checkpoint", where="model.pth", fix="pass a .pth from RWKV-LM")` reads
`not an RWKV checkpoint, model.pth: pass a .pth from RWKV-LM`.

Config dataclasses validate themselves in `__post_init__` with the helpers below, which raise
`ConfigError(key, value, expected)`; the recipe reader re-raises it with the dotted key and the
recipe file (`recipes/x.yaml: train.batch_size=-4: expected an int >= 1`).

Lives in the backbone (the lowest layer that reads users' files); `rwkv_mm.errors` re-exports it.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterable
from typing import Any


class UserError(ValueError):
    """A failure caused by the user's input (a file, a flag, a config value), not by rwkv_mm.

    Args:
        what: what is wrong ("checkpoint is truncated").
        where: the file, key, line or sample it concerns ("runs/a/model.pth", "train.lr").
        fix: what to do about it ("rerun with --resume").
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        self.what, self.where, self.fix = what, where, fix
        text = f"{what}, {where}" if where else what
        super().__init__(f"{text}: {fix}" if fix else text)


class ConfigError(UserError):
    """A config field with a value outside its allowed range. `key` is the field name (the
    recipe reader turns it into the dotted key and names the file)."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r}: expected {expected}")

    def prefixed(self, prefix: str) -> "ConfigError":
        """The same error with `prefix.` in front of the key (nested configs)."""
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.value, self.expected)


class DiskFullError(UserError):
    """A write that failed for lack of space; the file it would have replaced is untouched."""


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, and for torch's C++ writer's 'iostream error' / 'file write
    failed' (which is what a full disk looks like through torch.save)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("iostream error" in text or "file write failed" in text)


# ----------------------------------------------------------------------------- field checks
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_int(obj: Any, name: str, *, min: int | None = None, max: int | None = None,
              optional: bool = False) -> None:
    """`obj.name` is an int within [min, max] (None allowed when `optional`)."""
    v = getattr(obj, name)
    if optional and v is None:
        return
    ok = _is_int(v) and (min is None or v >= min) and (max is None or v <= max)
    if not ok:
        raise ConfigError(name, v, _range_text("an int", min, max))


def check_float(obj: Any, name: str, *, min: float | None = None, max: float | None = None,
                gt: float | None = None, lt: float | None = None, optional: bool = False) -> None:
    """`obj.name` is a finite number with min <= v <= max, gt < v < lt (bounds optional)."""
    v = getattr(obj, name)
    if optional and v is None:
        return
    ok = _is_number(v) and math.isfinite(v)
    ok = ok and (min is None or v >= min) and (max is None or v <= max)
    ok = ok and (gt is None or v > gt) and (lt is None or v < lt)
    if not ok:
        parts = [p for p in (f">= {min}" if min is not None else "", f"> {gt}" if gt is not None else "",
                             f"<= {max}" if max is not None else "", f"< {lt}" if lt is not None else "")
                 if p]
        raise ConfigError(name, v, "a finite number" + (" " + " and ".join(parts) if parts else ""))


def check_choice(obj: Any, name: str, choices: Iterable[Any]) -> None:
    """`obj.name` is one of `choices`."""
    v, choices = getattr(obj, name), list(choices)
    if v not in choices:
        raise ConfigError(name, v, "one of " + ", ".join(repr(c) for c in choices))


def _range_text(kind: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind
