"""Run folders (issue 13, item 3): a second training never overwrites or interleaves with a
first, a failed or changed resume leaves the saved config alone, torn logs and orphan temp files
left by a kill are repaired on the next start, and the quickstart can run twice."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
import yaml

from robustness.cli_utils import assert_user_error, run_cli, tree_snapshot
from training.toy_run import toy_recipe  # noqa: F401 (fixture)


def train(recipe: Path, run_dir: Path, *args: str, cwd: Path | None = None):
    return run_cli("train", str(recipe), *args, "--run-dir", str(run_dir), cwd=cwd)


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def saved(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_training_into_a_run_folder_again_is_refused(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir).rc == 0
    before = tree_snapshot(run_dir)
    result = train(toy_recipe, run_dir, "train.max_steps=2")
    assert_user_error(result, str(run_dir), "not empty", "--resume", "--overwrite")
    assert tree_snapshot(run_dir) == before  # metrics, checkpoint and config untouched


def test_the_default_run_folder_is_not_overwritten_either(toy_recipe, tmp_path):
    assert run_cli("train", str(toy_recipe), cwd=tmp_path).rc == 0
    before = tree_snapshot(tmp_path / "runs")
    assert_user_error(run_cli("train", str(toy_recipe), cwd=tmp_path), "runs/toy")
    assert tree_snapshot(tmp_path / "runs") == before


def test_overwrite_replaces_a_run_but_keeps_other_files(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir).rc == 0
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "checkpoints" / "best_by_hand.pt").write_bytes(b"mine too")
    result = train(toy_recipe, run_dir, "train.max_steps=2", "--overwrite")
    assert result.rc == 0, result.err
    assert "kept 2 file(s)" in result.err
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert (run_dir / "checkpoints" / "best_by_hand.pt").read_bytes() == b"mine too"
    assert steps_logged(run_dir) == [1, 2]  # the first run's 4 steps are gone, not appended to
    assert saved(run_dir)["train"]["max_steps"] == 2
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    assert not (run_dir / ".lock").exists()


def test_resume_and_overwrite_exclude_each_other(toy_recipe, tmp_path):
    result = train(toy_recipe, tmp_path / "run", "--resume", "--overwrite")
    assert result.rc == 2 and "not allowed with argument" in result.err


def test_a_second_training_fails_fast_naming_the_lock_holder(toy_recipe, tmp_path):
    from rwkv_mm.training.run_dir import RunLock

    run_dir = tmp_path / "run"
    with RunLock(run_dir):  # another training holds the folder (flock: this process, other fd)
        before = tree_snapshot(run_dir)
        assert_user_error(train(toy_recipe, run_dir), f"PID {os.getpid()}", str(run_dir))
        assert_user_error(train(toy_recipe, run_dir, "--overwrite"), f"PID {os.getpid()}")
        assert tree_snapshot(run_dir) == before
    assert train(toy_recipe, run_dir).rc == 0  # released


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / ".lock").write_text(f"{dead.pid} {os.uname().nodename}\n")
    result = train(toy_recipe, run_dir)
    assert result.rc == 0, result.err
    assert f"stale lock of PID {dead.pid}" in result.err
    assert not (run_dir / ".lock").exists()


def test_resume_refuses_a_changed_meaning_and_keeps_the_saved_config(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir).rc == 0
    config = (run_dir / "config.yaml").read_bytes()
    result = train(toy_recipe, run_dir, "train.max_steps=6", "train.batch_size=8", "train.seed=5",
                   "--resume")
    assert_user_error(result, "train.batch_size: 4 -> 8", "train.seed: 3 -> 5", "config.yaml",
                      "--allow-config-change")
    result = train(toy_recipe, run_dir, "train.max_steps=6", "n_embd=64", "--resume")
    assert_user_error(result, "n_embd: 32 -> 64")
    assert (run_dir / "config.yaml").read_bytes() == config
    # Allowed, the shape change still cannot load: the saved config stays as it was.
    result = train(toy_recipe, run_dir, "train.max_steps=6", "n_embd=64", "--resume", "--allow-config-change")
    assert_user_error(result, "does not fit this model", "last.pt")
    assert (run_dir / "config.yaml").read_bytes() == config
    assert steps_logged(run_dir) == [1, 2, 3, 4]


def test_resume_with_an_unreadable_saved_config_names_it(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir).rc == 0
    (run_dir / "config.yaml").write_bytes(b"\xff\xfe garbage")
    assert_user_error(train(toy_recipe, run_dir, "train.max_steps=6", "--resume"),
                      str(run_dir / "config.yaml"), "not a saved run config")


def test_resume_may_extend_the_run_and_change_logging(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir).rc == 0
    result = train(toy_recipe, run_dir, "train.max_steps=6", "train.log_every=2", "train.save_every=3",
                   "--resume")
    assert result.rc == 0, result.err
    assert steps_logged(run_dir) == [1, 2, 3, 4, 6]
    assert saved(run_dir)["train"]["max_steps"] == 6  # written once the checkpoint had loaded


def test_resume_of_an_empty_or_missing_folder_is_refused(toy_recipe, tmp_path):
    assert_user_error(train(toy_recipe, tmp_path / "nothing", "--resume"), "nothing to resume",
                      str(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()


def test_a_torn_last_metrics_line_is_cut_with_a_warning(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir, "train.max_steps=3").rc == 0  # checkpoint at step 2 and 3
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 2.1, "l')  # a kill in the middle of a write
    result = train(toy_recipe, run_dir, "train.max_steps=5", "--resume")
    assert result.rc == 0, result.err
    assert "torn last line" in result.err and str(run_dir / "metrics.jsonl") in result.err
    assert steps_logged(run_dir) == [1, 2, 3, 4, 5]


def test_a_torn_line_before_the_last_names_file_and_line(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir).rc == 0
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert_user_error(train(toy_recipe, run_dir, "train.max_steps=6", "--resume"),
                      "line 2", str(run_dir / "metrics.jsonl"))


def test_stale_temp_files_are_removed_at_start(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    assert train(toy_recipe, run_dir).rc == 0
    orphan = run_dir / "checkpoints" / "last.pt.k3x9_q2a.tmp"  # atomic_write's name pattern
    orphan.write_bytes(b"half a checkpoint")
    (run_dir / "keep.tmp").write_text("a user's file")  # not a name atomic_write makes
    result = train(toy_recipe, run_dir, "train.max_steps=5", "--resume")
    assert result.rc == 0, result.err
    assert not orphan.exists() and str(orphan) in result.err
    assert (run_dir / "keep.tmp").read_text() == "a user's file"


def test_the_quickstart_runs_twice_but_refuses_foreign_files(toy_recipe, tmp_path, monkeypatch):
    import rwkv_mm.quickstart as quickstart

    from rwkv_mm.modalities import QuickstartPart

    monkeypatch.setattr(quickstart, "quickstart_parts",
                        lambda: [QuickstartPart(str(toy_recipe), "toy part", ("train_loss",))])
    out = tmp_path / "qs"
    first = run_cli("quickstart", "--out", str(out))
    assert first.rc == 0, first.err
    second = run_cli("quickstart", "--out", str(out), "train.max_steps=2")
    assert second.rc == 0, second.err
    assert steps_logged(out / "toy.yaml") == [1, 2]  # the part folder: the recipe name
    (out / "toy.yaml" / "thesis.txt").write_text("not the quickstart's")
    before = tree_snapshot(out)
    assert_user_error(run_cli("quickstart", "--out", str(out)), "thesis.txt", str(out / "toy.yaml"))
    assert tree_snapshot(out) == before


def test_a_fresh_run_that_fails_before_starting_can_be_run_again(tmp_path):
    """A missing init_from stops the run before it wrote anything but config.yaml: the corrected
    (here: the same) command is not refused as a taken folder, and nothing else is removed."""
    run = tmp_path / "run"
    for _ in range(2):
        result = run_cli("train", "music/abc_tiny", "init_from=nope.pth", "--run-dir", str(run), cwd=tmp_path)
        assert_user_error(result, "nope.pth")
        assert "not empty" not in result.err
        assert not (run / "config.yaml").exists()
    (run / "notes.txt").write_text("mine")  # a folder holding a user's file is refused, untouched
    before = tree_snapshot(run)
    assert_user_error(run_cli("train", "music/abc_tiny", "init_from=nope.pth", "--run-dir", str(run), cwd=tmp_path),
                      "not empty")
    assert tree_snapshot(run) == before
