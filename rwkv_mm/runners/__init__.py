"""Runner registry: one module per training stage in this package registers itself by name.

A runner is `fn(config, run_dir, resume) -> summary dict` plus the dataclass its recipe fills and
the files it writes into the run folder (globs; `--overwrite` removes them and nothing else).
A stage is usually a class in the shape of `rwkv_mm.training.stage` (setup -> fit -> export):

    from rwkv_mm.runners import register_stage

    @register_stage("lm_music", config=MusicRunConfig, description="ABC music LM, one stage",
                    outputs=("model.pth", "tunes/tune_*.abc", "tunes/tune_*.mid"))
    class MusicStage:
        def __init__(self, cfg: MusicRunConfig, run_dir: Path): ...
        def setup(self) -> Trainer: ...
        def build_model(self) -> nn.Module: ...
        def export(self, model) -> dict: ...

A plain function works too: `@register_runner(name, config=..., outputs=...)` on
`def run(cfg, run_dir, resume) -> dict`.

Modules here are discovered (pkgutil) and imported on the first lookup, so adding a stage means
adding one file (and its recipe): no central list to edit. A modality package may keep its
runner inside itself instead and name the module in its declaration
(`Modality(runners=("rwkv_mm.<name>.runner",))`, see `rwkv_mm.modalities`); those modules are
imported on the first lookup too. A module that fails to import does not hide the others; its
error is reported when a runner name is not found.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Runner:
    name: str
    config_cls: type
    fn: Callable[..., dict]
    description: str
    outputs: tuple[str, ...] = ()  # what it writes into the run folder (globs relative to it)


_REGISTRY: dict[str, Runner] = {}
_IMPORT_ERRORS: dict[str, str] = {}  # module name -> "ErrorType: message"
_discovered = False


def register_runner(name: str, config: type, description: str = "",
                    outputs: tuple[str, ...] = ()) -> Callable:
    """Decorator: register `fn(cfg, run_dir, resume) -> dict` as runner `name`.

    `config` is the dataclass a recipe fills (every field needs a default or the recipe must set
    it); `outputs` are the files the runner writes into its run folder besides the trainer's
    (globs relative to it, e.g. "model.pth", "tunes/tune_*.abc"). Registering a second,
    different function under a taken name is an error."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"runner name must be a non-empty string, got {name!r}")
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise TypeError(f"runner {name!r}: config must be a dataclass type, got {config!r}")
    if isinstance(outputs, str) or not all(isinstance(p, str) and p for p in outputs):
        raise TypeError(f"runner {name!r}: outputs must be a tuple of globs, got {outputs!r}")

    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        old = _REGISTRY.get(name)
        if old is not None and _origin(old.fn) != _origin(fn):
            raise ValueError(f"runner {name!r} is registered twice "
                             f"({_origin(old.fn)} and {_origin(fn)})")
        _REGISTRY[name] = Runner(name, config, fn, description, tuple(outputs))
        return fn

    return wrap


def register_stage(name: str, config: type, description: str = "",
                   outputs: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator: register a stage class (`cls(cfg, run_dir)` with `setup`, `build_model`,
    `export`; see `rwkv_mm.training.stage`) as runner `name`, run by `run_stage`. The class
    gets a `run(cfg, run_dir, resume=False)` static method: the registered runner function."""

    def wrap(cls: type) -> type:
        def run(cfg, run_dir: str | Path, resume: bool = False) -> dict:
            from rwkv_mm.training.stage import run_stage

            return run_stage(cls(cfg, Path(run_dir)), resume)

        run.__module__, run.__qualname__ = cls.__module__, f"{cls.__qualname__}.run"
        run.__doc__ = f"Runner {name!r}: {cls.__name__} set up, fitted and exported (run_stage)."
        register_runner(name, config, description, outputs)(run)
        cls.run = staticmethod(run)
        return cls

    return wrap


def _origin(fn: Callable) -> str:
    return f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}"


def unregister_runner(name: str) -> None:
    """Remove a runner (tests)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    from rwkv_mm.modalities import modalities

    names = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names += [module for modality in modalities() for module in modality.runners]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:  # e.g. an optional dependency of one modality is missing
            _IMPORT_ERRORS[name] = f"{type(err).__name__}: {err}"


def list_runners() -> list[Runner]:
    """Every registered runner, by name."""
    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_runner(name: str) -> Runner:
    """The runner called `name`; ValueError naming the known runners (and the closest) otherwise."""
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        msg = f"unknown runner {name!r}{hint} (known runners: {', '.join(sorted(_REGISTRY)) or 'none'})"
        if _IMPORT_ERRORS:
            failed = "; ".join(f"{m}: {e}" for m, e in sorted(_IMPORT_ERRORS.items()))
            msg += f"; runner modules that failed to import: {failed}"
        raise ValueError(msg)
    return _REGISTRY[name]
