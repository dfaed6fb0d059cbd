"""`rwkv-mm music|vision|audio ...` command groups built from the modality declarations, the
old top-level `chat` / `eval` kept as silent aliases, shipped-data paths (`pkg:`), and the data
scripts calling the library."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from robustness.cli_utils import assert_user_error, run_cli, tree_snapshot
from rwkv_mm.cli import build_parser
from rwkv_mm.errors import UserError
from rwkv_mm.shipped import resolve_shipped, resolve_shipped_paths, shipped_path, shipped_root

REPO = Path(__file__).resolve().parents[1]
COMMAND_KEYS = {"command", "vision_command", "func"}


def _parsed(*argv: str) -> dict:
    return {k: v for k, v in vars(build_parser().parse_args(list(argv))).items() if k not in COMMAND_KEYS}


def test_help_lists_one_group_per_modality_and_the_aliases():
    out = run_cli("--help").out
    for name in ("music", "vision", "audio", "chat", "eval", "quickstart"):
        assert f"\n    {name} " in out, out
    assert "= vision chat" in out and "= vision eval" in out
    assert "generate" in run_cli("music", "--help").out and "synth" in run_cli("audio", "--help").out


@pytest.mark.parametrize("argv", [
    ("chat", "--checkpoint", "m", "--prompt", "hi", "--top-k", "3"),
    ("eval", "pope", "--checkpoint", "m", "--images", "i", "--questions", "q", "--answers", "a", "--limit", "2"),
    ("eval", "gqa", "--checkpoint", "m", "--images", "i", "--questions", "q", "--answers", "a.jsonl"),
])
def test_an_alias_parses_like_its_vision_command(argv):
    assert _parsed(*argv) == _parsed("vision", *argv)
    alias = build_parser().parse_args(list(argv))
    grouped = build_parser().parse_args(["vision", *argv])
    assert alias.func is grouped.func


def test_an_alias_prints_nothing_extra(tmp_path):
    missing = tmp_path / "no_image.png"
    alias = run_cli("chat", "--checkpoint", tmp_path / "m", "--image", missing, "--prompt", "hi")
    grouped = run_cli("vision", "chat", "--checkpoint", tmp_path / "m", "--image", missing, "--prompt", "hi")
    assert_user_error(alias, "no_image.png")
    assert (alias.rc, alias.out, alias.err) == (grouped.rc, grouped.out, grouped.err)
    flag = run_cli("eval", "gqa", "--checkpoint", "m", "--images", "i", "--questions", "q", "--answers", "a",
                   "--batch-size", "0")
    assert flag.rc == 2 and "argument --batch-size" in flag.err and "vision" not in flag.err


def test_a_group_without_a_command_is_an_argparse_error():
    result = run_cli("music")
    assert result.rc == 2 and "the following arguments are required: COMMAND" in result.err


# ----------------------------------------------------------------------------- shipped data (pkg:)
def test_pkg_paths_resolve_to_the_shipped_files_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped_root() == REPO  # a checkout: the repository; an installed copy: rwkv_mm/
    corpus = resolve_shipped("pkg:data/music/train.json")
    assert corpus == str(REPO / "data" / "music" / "train.json") and Path(corpus).is_file()
    assert resolve_shipped(Path("pkg:data/music")) == REPO / "data" / "music"
    assert resolve_shipped("data/music/train.json") == "data/music/train.json"  # a user's path: as written
    assert resolve_shipped(3) == 3
    assert shipped_path("recipes/music/abc_tiny.yaml").is_file()


@pytest.mark.parametrize("value,culprit", [("pkg:data/music/nope.json", "pkg:data/music/nope.json"),
                                           ("pkg:../etc/passwd", "pkg:../etc/passwd"),
                                           ("pkg:/etc/passwd", "pkg:/etc/passwd")])
def test_a_pkg_path_that_is_not_shipped_is_a_user_error(value, culprit):
    with pytest.raises(UserError, match=culprit.replace(".", r"\.")):
        resolve_shipped(value)


def test_a_recipe_config_has_every_pkg_value_resolved_and_nothing_else_touched():
    from rwkv_mm.recipe import read_recipe as load_recipe  # as written (load_recipe resolves pkg:)

    recipe = load_recipe("music/abc_tiny", ["init_from=pkg:data/music/validation.json"])
    assert recipe.config.data.train == "pkg:data/music/train.json"  # the recipe says where it is shipped
    resolved = resolve_shipped_paths(recipe)
    assert resolved.config.data.train == str(REPO / "data/music/train.json")
    assert resolved.config.init_from == str(REPO / "data/music/validation.json")
    assert resolved.config.backbone == recipe.config.backbone and resolved.source == recipe.source
    untouched = load_recipe("audio/synth_tiny")
    assert resolve_shipped_paths(untouched) is untouched


def test_train_reads_the_shipped_corpus_from_another_folder(tmp_path):
    fast = ["backbone.n_layer=1", "backbone.n_embd=32", "backbone.head_size=16", "data.ctx_len=32",
            "data.max_train_tunes=8", "data.max_validation_tunes=2", "train.max_steps=1", "train.batch_size=2",
            "train.eval_every=0", "train.save_every=1", "generate.n_tunes=1", "generate.max_bytes=10"]
    result = run_cli("train", "music/abc_tiny", *fast, "--run-dir", "run", cwd=tmp_path)
    assert result.rc == 0, result.err
    assert (tmp_path / "run" / "model.pth").is_file()


def test_generated_sets_default_to_the_working_folder():
    from rwkv_mm.recipe import load_recipe

    for name in ("visual/stage1_tiny", "visual/stage2_tiny", "visual/stage2_goldfinch_tiny"):
        data = load_recipe(name).config.data
        assert data.synthetic_root == "runs/data/visual_synth" and data.image_root == data.synthetic_root
    assert load_recipe("audio/synth_tiny").config.data.synthetic.out == "runs/data/audio_synth"


# ----------------------------------------------------------------------------- data scripts
def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_audio_synth_calls_the_library(tmp_path, capsys):
    script = _script("build_audio_synth")
    assert not hasattr(script, "rwkv_mm_main")  # no detour through the command-line parser
    out = tmp_path / "set"
    assert script.main(["--out", str(out), "--n-train", "2", "--n-eval", "1", "--clip-seconds", "0.2"]) == 0
    assert "2 train + 1 eval clips" in capsys.readouterr().out
    assert (out / "synth_info.json").is_file() and len(list((out / "clips").glob("*.wav"))) >= 3


def test_build_audio_synth_errors_are_one_line(tmp_path, capsys):
    script = _script("build_audio_synth")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work\n")
    before = tree_snapshot(tmp_path)
    assert script.main(["--out", str(folder), "--n-train", "2", "--n-eval", "1", "--clip-seconds", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("build_audio_synth: error:") and str(folder) in err[0]
    assert tree_snapshot(tmp_path) == before
    assert script.main(["--out", str(tmp_path / "x"), "--n-train", "0"]) == 2
    assert "n_train" in capsys.readouterr().err


def test_build_audio_synth_runs_as_a_script(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "data" / "build_audio_synth.py"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "--n-train" in result.stdout
