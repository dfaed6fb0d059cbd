"""Recipes: strict loading, dotted overrides, suggestions, round trip, the train/ls commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from rwkv_mm.cli import main
from rwkv_mm.recipe import (RecipeError, apply_overrides, build_config, dump_yaml, list_recipes,
                            load_recipe)
from rwkv_mm.runners import get_runner, list_runners, register_runner, unregister_runner
from rwkv_mm.training.config import TrainConfig


@dataclass
class ToyModel:
    width: int = 8
    kind: str = "eagle"
    dropout: float = 0.0


@dataclass
class ToyConfig:
    model: ToyModel = field(default_factory=ToyModel)
    train: TrainConfig = field(default_factory=TrainConfig)
    tags: list[str] = field(default_factory=list)
    init_from: str | None = None


@pytest.fixture()
def toy_runner():
    calls = []

    @register_runner("toy_test", config=ToyConfig, description="test runner")
    def run(cfg: ToyConfig, run_dir: Path, resume: bool) -> dict:
        calls.append((cfg, run_dir, resume))
        (Path(run_dir) / "done.txt").write_text(str(cfg.model.width))
        return {"width": cfg.model.width, "lr": cfg.train.lr}

    yield calls
    unregister_runner("toy_test")


def write(tmp_path, tree, name="toy.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def test_load_with_overrides_and_types(tmp_path, toy_runner):
    path = write(tmp_path, {"runner": "toy_test", "model": {"width": 16}, "train": {"lr": 1}})
    recipe = load_recipe(path, ["train.lr=3e-4", "model.dropout=0", "tags=[a, b]", "train.freeze=['emb.*']",
                                "init_from=null", "train.l2wrap=false"])
    cfg = recipe.config
    assert cfg.model.width == 16 and cfg.train.lr == 3e-4 and isinstance(cfg.model.dropout, float)
    assert cfg.tags == ["a", "b"] and cfg.train.freeze == ["emb.*"] and cfg.init_from is None
    assert cfg.train.l2wrap is False
    assert load_recipe(path).config.train.lr == 1.0  # int accepted for a float field


@pytest.mark.parametrize("tree,overrides,message", [
    ({"model": {"widht": 3}}, [], r"unknown key 'model.widht'; did you mean 'model.width'\?"),
    ({"trian": {}}, [], r"unknown key 'trian'; did you mean 'train'\?"),
    ({}, ["train.lrr=0.1"], r"unknown key 'train.lrr'; did you mean 'train.lr'\?"),
    ({"model": {"width": "wide"}}, [], r"model.width: expected int, got 'wide'"),
    ({"train": {"max_steps": 1.5}}, [], r"train.max_steps: expected int"),
    ({"tags": "a"}, [], r"tags: expected a list"),
    ({"train": {"l2wrap": "yes"}}, [], r"train.l2wrap: expected bool"),
    ({}, ["model.width"], r"expected key=value"),
])
def test_bad_recipes_are_rejected_with_the_key_named(tmp_path, toy_runner, tree, overrides, message):
    path = write(tmp_path, {"runner": "toy_test", **tree})
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(path, overrides)
    assert str(path) in str(err.value)


def test_unknown_runner_and_malformed_files(tmp_path, toy_runner):
    with pytest.raises(ValueError, match=r"unknown runner 'toy_tset'; did you mean 'toy_test'\?"):
        load_recipe(write(tmp_path, {"runner": "toy_tset"}))
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="list.yaml: a recipe is a YAML mapping with a 'runner:' key"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        load_recipe("music/abc_tinyy")


def test_resolved_config_round_trips(tmp_path, toy_runner):
    recipe = load_recipe(write(tmp_path, {"runner": "toy_test", "description": "d"}), ["model.width=5"])
    again = write(tmp_path, yaml.safe_load(dump_yaml(recipe)), "again.yaml")
    reloaded = load_recipe(again)
    assert reloaded.config == recipe.config and reloaded.description == "d"


def test_apply_overrides_builds_nested_sections():
    assert apply_overrides({}, ["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
    with pytest.raises(RecipeError, match="is not a section"):
        apply_overrides({"a": 3}, ["a.b=1"])


def test_build_config_reports_missing_required_field():
    @dataclass
    class Needs:
        path: str

    with pytest.raises(RecipeError, match="missing required key 'path'"):
        build_config(Needs, {})


def test_every_shipped_recipe_loads():
    rows = list_recipes()
    assert {"music/abc_tiny", "music/abc_eagle_l24_d512"} <= {name for name, _, _ in rows}
    for name, runner, _ in rows:
        recipe = load_recipe(name)
        assert recipe.runner == runner
    paper = load_recipe("music/abc_eagle_l24_d512").config
    assert (paper.model.n_layer, paper.model.n_embd, paper.data.ctx_len) == (24, 512, 1024)
    assert "lm_music" in {r.name for r in list_runners()}
    assert get_runner("lm_music").config_cls.__name__ == "MusicRunConfig"


def test_cli_train_saves_resolved_config_and_runs(tmp_path, toy_runner, capsys):
    path = write(tmp_path, {"runner": "toy_test"})
    run_dir = tmp_path / "run"
    assert main(["train", str(path), "model.width=12", "--run-dir", str(run_dir)]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["runner"] == "toy_test" and saved["model"]["width"] == 12
    assert (run_dir / "done.txt").read_text() == "12"
    assert "width" in capsys.readouterr().out
    assert main(["train", str(path), "model.nope=1", "--run-dir", str(run_dir)]) == 2
    assert "unknown key 'model.nope'" in capsys.readouterr().err


def test_cli_ls_lists_shipped_recipes(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "music/abc_tiny" in out and "lm_music" in out
