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

from rwkv_mm.backbone import atomic_write
from rwkv_mm.errors import ConfigError, UserError


class RecipeError(UserError):
    """A recipe or override that does not fit the runner's config."""


@dataclass
class Recipe:
    runner: str
    config: Any
    source: Path
    description: str = ""


def recipes_root() -> Path:
    """The shipped recipes folder: `rwkv_mm/recipes` in an installed copy, the repo's `recipes/`
    in a checkout (recognised by the `pyproject.toml` beside it)."""
    here = Path(__file__).resolve().parent
    installed, repo = here / "recipes", here.parent / "recipes"
    if installed.is_dir():
        return installed
    if repo.is_dir() and (here.parent / "pyproject.toml").is_file():
        return repo
    raise FileNotFoundError(f"no shipped recipes folder: neither {installed} nor {repo}")


def find_recipe(name: str | Path, root: Path | None = None) -> Path:
    """A recipe path: an existing file, or a name relative to the recipes folder (`.yaml` optional)."""
    path = Path(name)
    if path.is_file():
        return path
    root = Path(root) if root is not None else recipes_root()
    for candidate in (root / path, root / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    known = [n for n, _, _ in list_recipes(root)]
    stem = str(name)[:-5] if str(name).endswith(".yaml") else str(name)
    close = difflib.get_close_matches(stem, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise FileNotFoundError(f"recipe not found: {name}{hint} (not a file, and not a recipe under "
                            f"{root}: {', '.join(known) or 'none'}; see `rwkv-mm ls`)")


def list_recipes(root: Path | None = None) -> list[tuple[str, str, str]]:
    """(name, runner, description) of every YAML under the recipes folder (`root` for tests).

    Names are relative to the folder, without `.yaml` (`music/abc_tiny`); a file that is not a
    valid recipe mapping is listed with runner `?` rather than hiding it."""
    root = Path(root) if root is not None else recipes_root()
    if not root.is_dir():
        raise FileNotFoundError(f"recipes folder not found: {root}")
    out = []
    for path in sorted(root.rglob("*.yaml")):
        try:
            tree = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            tree = None
        if not isinstance(tree, dict):
            tree = {"description": "(not a recipe: not a YAML mapping)"}
        name = path.relative_to(root).with_suffix("").as_posix()
        out.append((name, str(tree.get("runner", "?")), str(tree.get("description", "") or "")))
    return out


# ----------------------------------------------------------------------------- YAML
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None


# ----------------------------------------------------------------------------- overrides
def apply_overrides(tree: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set `a.b.c=value` entries in a nested dict, in place (and return it).

    Values are parsed as YAML (`true`, `null`, `[1, 2]`, `{a: 1}`); missing sections are created,
    and an empty section (`model:` with nothing under it) counts as an empty mapping. Whether the
    keys exist is checked later, by `build_config`, against the runner's config."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r}: expected key=value (e.g. train.lr=3e-4)")
        key, raw = item.split("=", 1)
        parts = [p.strip() for p in key.split(".")]
        if not all(parts):
            raise RecipeError(f"override {item!r}: malformed key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise RecipeError(f"override {item!r}: the value is not valid YAML ({err})") from None
        node = tree
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            elif not isinstance(node[part], dict):
                section = ".".join(parts[: i + 1])
                raise RecipeError(f"override {item!r}: {section!r} is not a section "
                                  f"(it is {node[part]!r})")
            node = node[part]
        node[parts[-1]] = value
    return tree


# ----------------------------------------------------------------------------- typed build
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1 and dataclasses.is_dataclass(options[0]) and isinstance(value, dict):
            return _convert(value, options[0], where)  # `Section | None`: its error names the inner key
        for arg in options:
            try:
                return _convert(value, arg, where)
            except RecipeError:
                pass
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in choices:
            return str(value)  # `version=6` for Literal["5", "6"]
        raise RecipeError(f"{where}: expected one of {list(choices)}, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise RecipeError(f"{where}: expected {len(args)} items ({_type_name(tp)}), "
                                  f"got {value!r}")
            pairs = enumerate(zip(value, args))
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping ({_type_name(tp)}), got {value!r}")
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
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "3e-4" / "1e5" as strings
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        # a bare number where text is expected (`version: 5`) is taken as its text
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    else:
        raise RecipeError(f"{where}: type {_type_name(tp)} is not supported in recipes "
                          f"(use int, float, str, bool, Path, X | None, list, tuple, dict, Literal "
                          f"or a dataclass)")
    raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def build_config(cls: type, tree: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, strictly.

    An unknown key raises `RecipeError` naming the dotted key and the nearest valid one; a value
    of the wrong type names the key, the expected type and the value; a field without a default
    that the tree does not set is named as missing. Ints are accepted for float fields."""
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        what = f"'{where}'" if where else "the recipe"
        raise RecipeError(f"{what}: expected a mapping of {cls.__name__} fields, got {tree!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in tree if k not in fields]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = (f"; did you mean '{_join(where, close[0])}'?" if close
                else f"; valid keys{' in ' + repr(where) if where else ''}: {', '.join(fields)}")
        raise RecipeError(f"unknown key '{_join(where, key)}'{hint}")
    values = {}
    for name, f in fields.items():
        if name in tree:
            values[name] = _convert(tree[name], hints[name], _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing required key '{_join(where, name)}' "
                              f"({_type_name(hints[name])})")
    try:
        return cls(**values)  # __post_init__ checks ranges and choices (ConfigError)
    except ConfigError as err:
        raise RecipeError(str(err.prefixed(where))) from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def config_to_dict(config: Any) -> dict:
    """A config dataclass as plain nested dicts/lists/scalars (YAML-safe: tuples become lists,
    Paths strings)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------- recipes
def load_recipe(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe (a path, or a shipped name like `music/abc_tiny`), apply the dotted
    overrides and build the runner's config. Errors are `RecipeError`s naming the file."""
    from rwkv_mm.runners import get_runner

    path = find_recipe(name)
    tree = _read_yaml(path)
    if not isinstance(tree, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with a 'runner:' key, "
                          f"got {type(tree).__name__}")
    try:
        apply_overrides(tree, list(overrides))
        if "runner" not in tree:
            raise RecipeError("a recipe is a YAML mapping with a 'runner:' key (none found)")
        runner_name = tree.pop("runner")
        if not isinstance(runner_name, str):
            raise RecipeError(f"runner: expected a runner name, got {runner_name!r}")
        runner = get_runner(runner_name)
        description = tree.pop("description", "") or ""
        if not isinstance(description, str):
            raise RecipeError(f"description: expected str, got {description!r}")
        config = build_config(runner.config_cls, tree, "")
    except ValueError as err:  # RecipeError, or get_runner's unknown runner
        raise RecipeError(f"{path}: {err}") from None
    return Recipe(runner.name, config, path, description)


def resolved_tree(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data: `runner`, `description` and every config field
    (defaults included): what `dump_yaml` writes and `read_resolved_config` reads back."""
    tree: dict[str, Any] = {"runner": recipe.runner}
    if recipe.description:
        tree["description"] = recipe.description
    tree.update(config_to_dict(recipe.config))
    return tree


def dump_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (`resolved_tree`). `load_recipe` reads it back to an equal
    config."""
    return yaml.safe_dump(resolved_tree(recipe), sort_keys=False, allow_unicode=True)


def save_resolved_config(recipe: Recipe, run_dir: str | Path) -> Path:
    """Write the resolved recipe to `run_dir/config.yaml` atomically (temp file + rename)."""
    text = dump_yaml(recipe)
    return atomic_write(Path(run_dir) / "config.yaml",
                        lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_resolved_config(path: str | Path) -> dict[str, Any]:
    """The tree of a `config.yaml` that `save_resolved_config` wrote (safe YAML). A file that is
    not YAML or not a recipe mapping is a `RecipeError` naming it."""
    path = Path(path)
    try:
        tree = _read_yaml(path)
    except UnicodeDecodeError:
        tree = None
    if not isinstance(tree, dict) or "runner" not in tree:
        raise RecipeError(f"{path}: not a saved run config (expected a mapping with a 'runner:' key)")
    return tree
