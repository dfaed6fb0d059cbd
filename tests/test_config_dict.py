"""The one dict -> dataclass builder (rwkv_mm.backbone.config_from_dict) and its users: recipes,
RWKVConfig.from_dict, VisualRWKV's saved settings; load_recipe resolves shipped paths."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rwkv_mm.backbone import (ConfigDictError, ConfigError, RWKVConfig, UserError, config_from_dict,
                              config_to_dict)
from rwkv_mm.recipe import RecipeError, build_config, load_recipe, read_recipe, recipes_root
from rwkv_mm.shipped import shipped_path, shipped_root

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    size: int = 2
    shape: tuple[int, int] = (1, 2)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    out: Path = Path("x")


def test_nested_sections_tuples_and_paths_round_trip():
    cfg = config_from_dict(Outer, {"inner": {"size": 3, "shape": [4, 5]}, "extra": {}, "out": "y"})
    assert cfg == Outer(Inner(3, (4, 5)), Inner(), Path("y"))
    plain = config_to_dict(cfg)
    assert plain == {"inner": {"size": 3, "shape": [4, 5]}, "extra": {"size": 2, "shape": [1, 2]}, "out": "y"}
    assert config_from_dict(Outer, plain) == cfg


@pytest.mark.parametrize("values,message", [
    ({"inner": {"sise": 3}}, r"unknown key 'cfg\.inner\.sise'; did you mean 'cfg\.inner\.size'\?"),
    ({"extra": {"shape": [1]}}, r"cfg\.extra\.shape: expected 2 items"),
    ({"inner": {"size": "big"}}, r"cfg\.inner\.size: expected int, got 'big'"),
    ({"inner": 3}, r"'cfg\.inner': expected a mapping of Inner fields"),
])
def test_errors_name_the_dotted_key(values, message):
    with pytest.raises(ConfigDictError, match=message) as err:
        config_from_dict(Outer, values, "cfg")
    assert isinstance(err.value, UserError)


def test_the_dataclass_checks_come_back_with_the_dotted_key():
    with pytest.raises(ConfigError, match=r"model\.head_size=30: expected a multiple of 4") as err:
        config_from_dict(RWKVConfig, {"head_size": 30, "n_embd": 120}, "model")
    assert err.value.key == "model.head_size"


def test_rwkv_config_from_dict_is_the_builder():
    cfg = RWKVConfig(n_layer=2, n_embd=64, head_size=16, vocab_size=32)
    assert RWKVConfig.from_dict(cfg.to_dict()) == cfg == config_from_dict(RWKVConfig, cfg.to_dict())
    with pytest.raises(ConfigDictError, match=r"unknown key 'n_layers'; did you mean 'n_layer'\?"):
        RWKVConfig.from_dict({"n_layers": 2})
    with pytest.raises(ConfigDictError, match=r"n_layer: expected int, got 'two'"):
        RWKVConfig.from_dict({"n_layer": "two"})


def test_recipe_build_config_raises_recipe_errors():
    with pytest.raises(RecipeError, match=r"unknown key 'model\.n_layers'"):
        build_config(RWKVConfig, {"n_layers": 2}, "model")
    with pytest.raises(RecipeError, match=r"model\.head_size=30"):
        build_config(RWKVConfig, {"head_size": 30, "n_embd": 120}, "model")


def test_no_module_has_its_own_builder():
    """Only config_dict.py walks a dataclass's fields to build it from a dict."""
    owners = []
    for folder in ("rwkv_mm", "backbone"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "get_type_hints":
                    owners.append(path.relative_to(REPO).as_posix())
    assert owners == ["backbone/config_dict.py"]


# ----------------------------------------------------------------------------- shipped paths
def test_load_recipe_resolves_shipped_paths_and_read_recipe_keeps_them():
    written = read_recipe("music/abc_tiny")
    assert written.config.data.train == "pkg:data/music/train.json"
    loaded = load_recipe("music/abc_tiny")
    assert loaded.config.data.train == str(REPO / "data/music/train.json")
    assert dataclasses.replace(loaded.config, data=written.config.data) == written.config  # nothing else


def test_a_missing_shipped_path_names_the_recipe(tmp_path):
    with pytest.raises(RecipeError, match=r"abc_tiny\.yaml: pkg:data/music/nope\.json: not shipped"):
        load_recipe("music/abc_tiny", ["data.train=pkg:data/music/nope.json"])


def test_recipes_root_is_the_shipped_recipes_folder():
    assert recipes_root() == shipped_path("recipes") == shipped_root() / "recipes"
