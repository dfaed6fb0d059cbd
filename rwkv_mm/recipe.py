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

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rwkv_mm.backbone import ConfigDictError, atomic_write, config_from_dict, config_to_dict
from rwkv_mm.errors import ConfigError, UserError
from rwkv_mm.shipped import resolve_shipped_paths, shipped_path

__all__ = ["Recipe", "RecipeError", "recipes_root", "find_recipe", "list_recipes", "apply_overrides",
           "build_config", "config_to_dict", "read_recipe", "load_recipe", "resolved_tree", "dump_yaml",
           "save_resolved_config", "read_resolved_config"]


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
    in a checkout (`rwkv_mm.shipped`)."""
    return shipped_path("recipes")


def default_run_dir(recipe: Recipe) -> Path:
    """Where `rwkv-mm train` writes without --run-dir: runs/<shipped name> for a shipped recipe
    (runs/visual/stage1_tiny, which stage 2's `init_from` names), runs/<file stem> otherwise."""
    try:
        name = recipe.source.resolve().relative_to(recipes_root().resolve()).with_suffix("")
    except ValueError:  # a recipe file of the user's own
        name = Path(recipe.source.stem)
    return Path("runs") / name


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
def build_config(cls: type, tree: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, strictly (`rwkv_mm.backbone.config_from_dict`),
    its errors as `RecipeError`s: an unknown key names the dotted key and the nearest valid one;
    a value of the wrong type names the key, the expected type and the value; a field without a
    default that the tree does not set is named as missing. Ints are accepted for float fields."""
    try:
        return config_from_dict(cls, tree, where)
    except (ConfigDictError, ConfigError) as err:
        raise RecipeError(str(err)) from None


# ----------------------------------------------------------------------------- recipes
def load_recipe(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The recipe `read_recipe` reads, with every shipped path (`pkg:data/...`) resolved to the
    file of this copy of rwkv_mm (`rwkv_mm.shipped`): what a run uses and saves. A `pkg:` path
    this copy does not ship is a `RecipeError` naming the recipe file and the path."""
    recipe = read_recipe(name, overrides)
    try:
        return resolve_shipped_paths(recipe)
    except UserError as err:
        raise RecipeError(f"{recipe.source}: {err}") from None


def read_recipe(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe (a path, or a shipped name like `music/abc_tiny`), apply the dotted
    overrides and build the runner's config, paths as written (`pkg:` kept; `load_recipe`
    resolves them). Errors are `RecipeError`s naming the file."""
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
