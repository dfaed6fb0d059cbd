"""Files shipped with rwkv_mm (recipes, the bundled music corpus), wherever it is installed.

A recipe names a shipped file with the `pkg:` prefix and a path relative to the shipped root:

    data:
      train: pkg:data/music/train.json     # the bundled corpus, found from any working folder
      validation: my/own/tunes.json        # a user's path: relative to the working folder

The shipped root is the repository in a checkout (its `recipes/`, `data/music/`) and the
installed `rwkv_mm/` folder in a `pip install .` copy (`rwkv_mm/recipes/`,
`rwkv_mm/data/music/`, see pyproject.toml). `resolve_shipped` is the one place that turns a
`pkg:` value into a real path (`rwkv_mm.recipe.load_recipe` applies it to every recipe it
returns); every other path is left as the user wrote it. Generated data
and run outputs never go into the shipped root: they are written under the working folder
(`runs/...`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

__all__ = ["PREFIX", "shipped_root", "shipped_path", "resolve_shipped", "resolve_shipped_paths"]

#: Marks a path relative to the shipped root (`pkg:data/music/train.json`).
PREFIX = "pkg:"


def shipped_root() -> Path:
    """The folder holding `recipes/` and `data/`: the installed `rwkv_mm/` package folder, or the
    repository of a checkout (recognised by the `pyproject.toml` beside the package)."""
    package = Path(__file__).resolve().parent
    if (package / "recipes").is_dir():
        return package
    if (package.parent / "pyproject.toml").is_file() and (package.parent / "recipes").is_dir():
        return package.parent
    raise FileNotFoundError(f"rwkv_mm's shipped files are missing: neither {package}/recipes "
                            f"(an installed copy) nor {package.parent}/recipes (a checkout)")


def shipped_path(relative: str | Path) -> Path:
    """`relative` (e.g. `data/music/train.json`) under the shipped root; a UserError naming the
    file when this copy of rwkv_mm does not ship it."""
    from rwkv_mm.errors import UserError

    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UserError(f"{PREFIX}{relative}: expected a path inside rwkv_mm's shipped files "
                        "(e.g. pkg:data/music/train.json)")
    path = shipped_root() / rel
    if not path.exists():
        raise UserError(f"{PREFIX}{rel.as_posix()}: not shipped with this rwkv_mm", where=str(path),
                        fix="check the name, or pass a path of your own")
    return path


def resolve_shipped(value: Any) -> Any:
    """A `pkg:` string or Path as the absolute path of the shipped file (same type); any other
    value unchanged."""
    text = str(value) if isinstance(value, (str, Path)) else None
    if text is None or not text.startswith(PREFIX):
        return value
    path = shipped_path(text[len(PREFIX):])
    return path if isinstance(value, Path) else str(path)


def resolve_shipped_paths(config: Any) -> Any:
    """`config` (a dataclass, list, tuple or dict, nested) with every `pkg:` value resolved by
    `resolve_shipped`; returns the same object when nothing changed, else a copy."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        changes = {}
        for f in dataclasses.fields(config):
            if not f.init:
                continue
            old = getattr(config, f.name)
            new = resolve_shipped_paths(old)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(config, **changes) if changes else config
    if isinstance(config, (list, tuple)):
        items = [resolve_shipped_paths(v) for v in config]
        if all(a is b for a, b in zip(items, config)):
            return config
        return type(config)(items) if isinstance(config, list) else tuple(items)
    if isinstance(config, dict):
        items = {k: resolve_shipped_paths(v) for k, v in config.items()}
        return config if all(items[k] is config[k] for k in config) else items
    return resolve_shipped(config)
