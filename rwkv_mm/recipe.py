"""Recipes: YAML files that name a runner and set every field of its config dataclass.

    runner: lm_music
    description: "..."
    model: {n_layer: 4, ...}
    train: {lr: 1.0e-3, ...}

`load_recipe(path_or_name, ["train.lr=3e-4", ...])` applies dotted overrides, then builds the
runner's dataclass strictly: an unknown key is an error naming the file, the dotted key and the
nearest valid key; a wrong type names the key, the expected type and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rwkv_mm.backbone.checkpoint import atomic_write


class RecipeError(ValueError):
    """A recipe or override that does not fit the runner's config."""


@dataclass
class Recipe:
    runner: str
    config: Any
    source: Path
    description: str = ""


def recipes_root() -> Path:
    """The shipped recipes folder: the repo's `recipes/`, or `rwkv_mm/recipes` when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "recipes", here / "recipes"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no recipes folder next to {here}")


def find_recipe(name: str | Path, root: Path | None = None) -> Path:
    """A recipe path: an existing file, or a name relative to the recipes folder (`.yaml` optional)."""
    path = Path(name)
    if path.is_file():
        return path
    root = root or recipes_root()
    for candidate in (root / path, root / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    known = [n for n, _, _ in list_recipes(root)]
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise FileNotFoundError(f"recipe not found: {name}{hint} (shipped recipes: {', '.join(known)})")


def list_recipes(root: Path | None = None) -> list[tuple[str, str, str]]:
    """(name, runner, description) of every YAML under the recipes folder."""
    root = root or recipes_root()
    out = []
    for path in sorted(root.rglob("*.yaml")):
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            tree = {}
        name = str(path.relative_to(root).with_suffix(""))
        out.append((name, str(tree.get("runner", "?")), str(tree.get("description", ""))))
    return out


# ----------------------------------------------------------------------------- overrides
def apply_overrides(tree: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set `a.b.c=value` entries (values parsed as YAML) in a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r}: expected key=value (e.g. train.lr=3e-4)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise RecipeError(f"override {item!r}: malformed key {key!r}")
        node = tree
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise RecipeError(f"override {item!r}: {part!r} is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return tree


# ----------------------------------------------------------------------------- typed build
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except RecipeError:
                pass
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise RecipeError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp) or (Any, Any)
        return {str(k): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build_config(cls: type, tree: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, strictly (unknown keys and wrong types raise)."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise RecipeError(f"{where}: expected a mapping of {cls.__name__} fields, got {tree!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in tree if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"; did you mean '{_join(where, close[0])}'?" if close else f"; valid keys: {sorted(fields)}"
        raise RecipeError(f"unknown key '{_join(where, key)}'{hint}")
    values = {}
    for name, f in fields.items():
        if name in tree:
            values[name] = _convert(tree[name], hints[name], _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing required key '{_join(where, name)}'")
    return cls(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def config_to_dict(config: Any) -> dict:
    """A config dataclass as plain nested dicts/lists (YAML-safe)."""
    return dataclasses.asdict(config)


# ----------------------------------------------------------------------------- recipes
def load_recipe(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe (a path or a shipped name), apply overrides and build the runner's config."""
    from rwkv_mm.runners import get_runner

    path = find_recipe(name)
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(tree, dict) or "runner" not in tree:
        raise RecipeError(f"{path}: a recipe is a YAML mapping with a 'runner:' key")
    try:
        apply_overrides(tree, list(overrides))
        runner = get_runner(str(tree.pop("runner")))
        description = str(tree.pop("description", ""))
        config = build_config(runner.config_cls, tree, "")
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
    return Recipe(runner.name, config, path, description)


def dump_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (loadable again by `load_recipe`)."""
    tree = {"runner": recipe.runner}
    if recipe.description:
        tree["description"] = recipe.description
    tree.update(config_to_dict(recipe.config))
    return yaml.safe_dump(tree, sort_keys=False)


def save_resolved_config(recipe: Recipe, run_dir: Path) -> Path:
    """Write the resolved recipe to `run_dir/config.yaml` atomically."""
    text = dump_yaml(recipe)
    return atomic_write(Path(run_dir) / "config.yaml", lambda tmp: Path(tmp).write_text(text))
