"""Runner registry: one module per training stage in this package registers itself by name.

A runner is `fn(config, run_dir, resume) -> summary dict` plus the dataclass its recipe fills.
Modules here are discovered and imported on the first lookup, so adding a stage means adding
one file (and its recipe) — no central list to edit.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Runner:
    name: str
    config_cls: type
    fn: Callable[..., dict]
    description: str


_REGISTRY: dict[str, Runner] = {}
_discovered = False


def register_runner(name: str, config: type, description: str = "") -> Callable:
    """Decorator: register `fn(cfg, run_dir, resume) -> dict` as runner `name`."""

    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"runner {name!r} is registered twice "
                             f"({_REGISTRY[name].fn.__module__} and {fn.__module__})")
        _REGISTRY[name] = Runner(name, config, fn, description)
        return fn

    return wrap


def unregister_runner(name: str) -> None:
    """Remove a runner (tests)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True


def list_runners() -> list[Runner]:
    """Every registered runner, by name."""
    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_runner(name: str) -> Runner:
    """The runner called `name`; ValueError naming the known runners otherwise."""
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown runner {name!r}{hint} known runners: {sorted(_REGISTRY)}")
    return _REGISTRY[name]

