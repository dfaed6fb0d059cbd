"""Config dataclasses from plain data and back: the one dict -> dataclass builder.

    config_from_dict(RWKVConfig, {"n_layer": 4, "n_embd": 128})      # a recipe section, a file's config
    config_to_dict(config)                                          # plain dicts/lists/scalars

`config_from_dict` is strict: an unknown key names the dotted key and the nearest valid one, a
value of the wrong type names the key, the annotated type and the value, a required field left
out is named as missing, and nested dataclasses (`model: RWKVConfig`, `Section | None`) are built
the same way with their dotted keys. The dataclass's own `__post_init__` checks (`ConfigError`)
come back with the dotted key (`model.head_size=30: expected a multiple of 4`).

Every config read from a file goes through it: recipes (`rwkv_mm.recipe.build_config` adds the
recipe file), the config in a `.safetensors`' metadata (`RWKVConfig.from_dict`), a front end's
saved settings (VisualRWKV's `visual_rwkv.json`). Lives in the backbone, the lowest layer that
reads configs, so the backbone and everything above it share it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from .errors import ConfigError, UserError

__all__ = ["ConfigDictError", "config_from_dict", "config_to_dict"]

_SUPPORTED = "int, float, str, bool, Path, X | None, list, tuple, dict, Literal or a dataclass"


class ConfigDictError(UserError):
    """A mapping that does not fit a config dataclass: an unknown or missing key, or a value of
    the wrong type (the message names the dotted key)."""


def config_from_dict(cls: type, values: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, strictly.

    Args:
        cls: the config dataclass (its fields' annotations say what each value must be).
        values: the mapping (None counts as empty: every field at its default).
        where: the dotted key of this mapping in a larger tree ("model"), put in front of the
            keys that errors name.

    Raises:
        ConfigDictError: an unknown key (with the nearest valid one), a missing required key or
            a value of the wrong type. Ints are accepted for float fields, numbers for str fields.
        ConfigError: a value the dataclass's own checks refuse, its key prefixed with `where`.
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        what = f"'{where}'" if where else "the config"
        raise ConfigDictError(f"{what}: expected a mapping of {cls.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = (f"; did you mean '{_join(where, close[0])}'?" if close
                else f"; valid keys{' in ' + repr(where) if where else ''}: {', '.join(fields)}")
        raise ConfigDictError(f"unknown key '{_join(where, key)}'{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = _convert(values[name], hints[name], _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigDictError(f"missing required key '{_join(where, name)}' "
                                  f"({_type_name(hints[name])})")
    try:
        return cls(**kwargs)  # __post_init__ checks ranges and choices (ConfigError)
    except ConfigError as err:
        raise err.prefixed(where) from None


def config_to_dict(config: Any) -> dict:
    """A config dataclass as plain nested dicts/lists/scalars (YAML/JSON-safe: tuples become
    lists, Paths strings); `config_from_dict` builds an equal config from it."""
    return _plain(dataclasses.asdict(config))


# ----------------------------------------------------------------------------- conversion
def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a plain value to the annotated type `tp` (`where`: its dotted key)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, where)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in choices:
            return str(value)  # `version=6` for Literal["5", "6"]
        raise ConfigDictError(f"{where}: expected one of {list(choices)}, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        return _convert_sequence(value, tp, where)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigDictError(f"{where}: expected a mapping ({_type_name(tp)}), got {value!r}")
        _, val_tp = typing.get_args(tp) or (Any, Any)
        return {str(k): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where)
    if tp not in _SCALARS:
        raise ConfigDictError(f"{where}: type {_type_name(tp)} is not supported in configs (use "
                              f"{_SUPPORTED})")
    converted = _SCALARS[tp](value)
    if converted is _NO:
        raise ConfigDictError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return converted


def _convert_union(value: Any, tp: Any, where: str) -> Any:
    """`X | Y | None`: None when allowed, else the first option the value converts to."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [arg for arg in args if arg is not type(None)]
    if len(options) == 1 and dataclasses.is_dataclass(options[0]) and isinstance(value, dict):
        return _convert(value, options[0], where)  # `Section | None`: its error names the inner key
    for arg in options:
        try:
            return _convert(value, arg, where)
        except (ConfigDictError, ConfigError):
            pass
    raise ConfigDictError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _convert_sequence(value: Any, tp: Any, where: str) -> list | tuple:
    """`list[X]`, `tuple[X, ...]` or a fixed `tuple[X, Y]` from a list or tuple."""
    if not isinstance(value, (list, tuple)):
        raise ConfigDictError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigDictError(f"{where}: expected {len(args)} items ({_type_name(tp)}), "
                                  f"got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    item_tp = args[0] if args else Any
    items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if (origin or tp) is tuple else items


# ----------------------------------------------------------------------------- scalars
_NO = object()  # a value a scalar type does not accept


def _to_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _NO


def _to_int(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else _NO


def _to_float(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # PyYAML (YAML 1.1) reads "3e-4" / "1e5" as strings
        try:
            return float(value)
        except ValueError:
            pass
    return _NO


def _to_str(value: Any) -> Any:
    # a bare number where text is expected (`version: 5`) is taken as its text
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return _NO


def _to_path(value: Any) -> Any:
    return Path(value) if isinstance(value, (str, Path)) else _NO


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, Path: _to_path}
