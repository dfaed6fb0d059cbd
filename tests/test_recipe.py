"""Recipes: strict loading, dotted overrides, suggestions, round trip, the train/ls commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from rwkv_mm.cli import main
from rwkv_mm.recipe import (RecipeError, apply_overrides, build_config, config_to_dict, dump_yaml,
                            find_recipe, list_recipes, load_recipe)
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
    scale: float | None = None
    mode: Literal["fast", "slow"] = "fast"
    version: Literal["5", "6"] = "5"
    shape: tuple[int, int] = (2, 3)
    weights: dict[str, float] = field(default_factory=dict)
    out: Path = Path("out")


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
    ({}, ["model.width"], r"override 'model.width': expected key=value"),
    ({}, ["tags=[a, b"], r"override 'tags=\[a, b': the value is not valid YAML"),
    ({"model": {"width": 1}}, ["model.width.x=1"], r"'model.width' is not a section"),
    ({}, ["mode=medium"], r"mode: expected one of \['fast', 'slow'\], got 'medium'"),
    ({}, ["shape=[1, 2, 3]"], r"shape: expected 2 items"),
    ({}, ["scale=big"], r"scale: expected float \| None, got 'big'"),
    ({}, ["weights.a=heavy"], r"weights.a: expected float, got 'heavy'"),
    ({"model": 3}, [], r"'model': expected a mapping of ToyModel fields, got 3"),
    ({"description": ["x"]}, [], r"description: expected str"),
    ({"zzzz": 1}, [], r"unknown key 'zzzz'; valid keys: model, train, tags"),
])
def test_bad_recipes_are_rejected_with_the_key_named(tmp_path, toy_runner, tree, overrides, message):
    path = write(tmp_path, {"runner": "toy_test", **tree})
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(path, overrides)
    assert str(path) in str(err.value)


def test_unknown_runner_and_malformed_files(tmp_path, toy_runner):
    with pytest.raises(RecipeError, match=r"toy.yaml: unknown runner 'toy_tset'; did you mean "
                                          r"'toy_test'\? \(known runners: .*lm_music"):
        load_recipe(write(tmp_path, {"runner": "toy_tset"}))
    with pytest.raises(ValueError, match=r"unknown runner 'lm_musik'; did you mean 'lm_music'\?"):
        get_runner("lm_musik")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="list.yaml: a recipe is a YAML mapping with a 'runner:' key"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="norunner.yaml: a recipe is a YAML mapping with a 'runner:' key"):
        load_recipe(write(tmp_path, {"model": {"width": 3}}, "norunner.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("runner: toy_test\nmodel: [1,\n")
    with pytest.raises(RecipeError, match="broken.yaml: not valid YAML"):
        load_recipe(broken)
    twice = tmp_path / "twice.yaml"
    twice.write_text("runner: toy_test\nmodel:\n  width: 3\n  width: 4\n")
    with pytest.raises(RecipeError, match="twice.yaml: not valid YAML.*duplicate key 'width'"):
        load_recipe(twice)
    # the runner may come from an override
    assert load_recipe(write(tmp_path, {}, "empty.yaml"), ["runner=toy_test"]).runner == "toy_test"
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        load_recipe("music/abc_tinyy")


def test_override_values_are_typed(tmp_path, toy_runner):
    path = write(tmp_path, {"runner": "toy_test", "model": None, "scale": 2})
    cfg = load_recipe(path, ["model.width=7", "scale=1e-3", "mode=slow", "version=6", "shape=[4, 5]",
                             "weights.a=1", "weights.b=2.5e-1", "out=/tmp/o", "train.betas=[0, 0.5]",
                             "model.kind=", "train.precision=bf16"]).config
    assert cfg.model.width == 7  # an empty `model:` section takes overrides
    assert cfg.scale == 1e-3 and isinstance(cfg.scale, float)  # PyYAML reads 1e-3 as a string
    assert cfg.mode == "slow" and cfg.version == "6" and cfg.shape == (4, 5)
    assert cfg.weights == {"a": 1.0, "b": 0.25} and cfg.out == Path("/tmp/o")
    assert cfg.train.betas == [0.0, 0.5] and all(isinstance(b, float) for b in cfg.train.betas)
    assert cfg.model.kind == "" and cfg.train.precision == "bf16"
    assert load_recipe(path, ["scale=null"]).config.scale is None
    assert load_recipe(path).config.scale == 2.0


def test_resolved_config_round_trips(tmp_path, toy_runner):
    recipe = load_recipe(write(tmp_path, {"runner": "toy_test", "description": "d"}),
                         ["model.width=5", "train.lr=3e-4", "shape=[7, 8]", "out=x/y", "weights.q=0.5",
                          "init_from=ckpt.pth", "train.freeze=[emb.*]"])
    text = dump_yaml(recipe)
    assert text.startswith("runner: toy_test\ndescription: d\n")
    plain = config_to_dict(recipe.config)
    assert plain["shape"] == [7, 8] and plain["out"] == "x/y" and plain["train"]["lr"] == 3e-4
    again = tmp_path / "again.yaml"
    again.write_text(text)
    reloaded = load_recipe(again)
    assert reloaded.config == recipe.config and reloaded.description == "d"
    assert reloaded.runner == "toy_test" and dump_yaml(reloaded) == text


def test_apply_overrides_builds_nested_sections():
    assert apply_overrides({}, ["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
    assert apply_overrides({"a": None}, ["a.b=true", "c=[1, 2]", "d=null", "e=x=y"]) == {
        "a": {"b": True}, "c": [1, 2], "d": None, "e": "x=y"}
    with pytest.raises(RecipeError, match="is not a section"):
        apply_overrides({"a": 3}, ["a.b=1"])
    with pytest.raises(RecipeError, match="malformed key"):
        apply_overrides({}, ["a..b=1"])


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
    assert (paper.backbone.n_layer, paper.backbone.n_embd, paper.data.ctx_len) == (24, 512, 1024)
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


def test_cli_train_finds_shipped_recipes_by_name(tmp_path):
    assert find_recipe("music/abc_tiny") == find_recipe("music/abc_tiny.yaml")
    assert find_recipe("music/abc_tiny").name == "abc_tiny.yaml"
    with pytest.raises(FileNotFoundError, match=r"did you mean 'music/abc_tiny'\?"):
        find_recipe("music/abc_tiyn.yaml")


def test_cli_train_default_run_dir_and_errors(tmp_path, toy_runner, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, {"runner": "toy_test", "train": {"lr": 1.0e-3}}, "my_stage.yaml")
    assert main(["train", str(path), "train.lr=3e-4"]) == 0
    out = capsys.readouterr().out
    assert "runner: toy_test" in out and "lr: 0.0003" in out and "# summary" in out
    assert yaml.safe_load((tmp_path / "runs/my_stage/config.yaml").read_text())["train"]["lr"] == 3e-4
    assert toy_runner[-1][1] == Path("runs/my_stage") and toy_runner[-1][2] is False
    assert main(["train", str(path), "--resume"]) == 2  # train.lr would change from 3e-4 to 1e-3
    assert "train.lr: 0.0003 -> 0.001" in capsys.readouterr().err
    assert main(["train", str(path), "train.lr=3e-4", "--resume"]) == 0 and toy_runner[-1][2] is True
    assert main(["train", str(path), "train.lrr=1"]) == 2
    assert "rwkv-mm: error: " in capsys.readouterr().err
    assert main(["train", "no/such/recipe"]) == 2
    assert "recipe not found: no/such/recipe" in capsys.readouterr().err
    assert list(tmp_path.glob("runs/my_stage/*.tmp")) == []  # the atomic write left no temp file


def test_cli_ls_lists_shipped_recipes(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "music/abc_tiny" in out and "lm_music" in out


def test_cli_ls_on_a_folder(tmp_path, capsys):
    (tmp_path / "vision").mkdir()
    write(tmp_path / "vision", {"runner": "vlm_stage1", "description": "projector only"}, "stage1.yaml")
    write(tmp_path, {"runner": "toy_test"}, "toy.yaml")
    (tmp_path / "notes.yaml").write_text("- just a list\n")
    (tmp_path / "README.md").write_text("not a recipe")
    assert list_recipes(tmp_path) == [
        ("notes", "?", "(not a recipe: not a YAML mapping)"),
        ("toy", "toy_test", ""),
        ("vision/stage1", "vlm_stage1", "projector only"),
    ]
    assert main(["ls", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["recipe", "runner", "description"]
    assert lines[3].split() == ["vision/stage1", "vlm_stage1", "projector", "only"]
    assert lines[3].index("vlm_stage1") == lines[0].index("runner")  # aligned columns
    assert main(["ls", "--root", str(tmp_path / "nope")]) == 2
    assert "recipes folder not found" in capsys.readouterr().err


def test_registry_rejects_bad_registrations():
    def fn(cfg, run_dir, resume):
        return {}

    with pytest.raises(TypeError, match="must be a dataclass"):
        register_runner("toy_bad", config=dict)(fn)
    register_runner("toy_twice", config=ToyModel)(fn)
    try:
        register_runner("toy_twice", config=ToyModel)(fn)  # the same function again: fine

        def other(cfg, run_dir, resume):
            return {}

        with pytest.raises(ValueError, match="registered twice"):
            register_runner("toy_twice", config=ToyModel)(other)
    finally:
        unregister_runner("toy_twice")
    assert "toy_twice" not in {r.name for r in list_runners()}


def test_default_run_dir_is_the_shipped_name_or_the_file_stem(tmp_path):
    from rwkv_mm.recipe import default_run_dir

    assert default_run_dir(load_recipe("visual/stage1_tiny")) == Path("runs/visual/stage1_tiny")
    own = tmp_path / "mine.yaml"
    own.write_text(find_recipe("music/abc_tiny").read_text())
    assert default_run_dir(load_recipe(str(own))) == Path("runs/mine")


def test_every_init_from_under_runs_names_what_a_shipped_recipe_or_the_quickstart_writes():
    """stage 2 after stage 1, LoRA/state tuning after their base: `rwkv-mm train A` then
    `rwkv-mm train B` works without --run-dir."""
    import yaml

    from rwkv_mm.recipe import default_run_dir, list_recipes

    names = [name for name, _, _ in list_recipes()]
    written = {default_run_dir(load_recipe(n)).as_posix() for n in names}
    quickstart = {f"runs/quickstart/{Path(n).name}" for n in names}
    checked = 0
    for name in names:
        init_from = yaml.safe_load(find_recipe(name).read_text()).get("init_from")
        if isinstance(init_from, str) and init_from.startswith("runs/"):
            run = Path(init_from).parent if Path(init_from).suffix or init_from.endswith("/model") else Path(init_from)
            assert run.as_posix() in written | quickstart, f"{name}: init_from {init_from} is written by no recipe"
            checked += 1
    assert checked >= 5
