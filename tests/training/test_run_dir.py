"""Run folders (rwkv_mm/training/run_dir.py): what counts as a run's output, which config
changes a resume may make, the lock, and rank 0 alone holding the folder under torchrun.
The command-line cases of issue 13 are in tests/robustness/test_run_folder.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from rwkv_mm.errors import UserError
from rwkv_mm.recipe import Recipe
from rwkv_mm.training.run_dir import (RunLock, classify, config_changes, remove_outputs,
                                      stale_temp_files, training_folder)
from rwkv_test_utils import gloo_process_group
from training.toy_run import RUNNER, ToyRunConfig


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_outputs_are_told_from_other_files_and_only_outputs_are_removed(tmp_path):
    outputs = ["config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/step_0000010.pt",
               "model/backbone.pth", "tunes/tune_000.abc", "checkpoints/last.pt.ab_12xyz.tmp"]
    others = ["notes.txt", "checkpoints/mine.pt", "model/readme.md", "keep.tmp", "x.abcdefghi.tmp"]
    for name in outputs + others:
        touch(tmp_path / name)
    (tmp_path / "empty_folder_of_mine").mkdir()
    found, foreign = classify(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == sorted(outputs)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in foreign) == sorted(others)
    assert stale_temp_files(tmp_path) == [tmp_path / "checkpoints/last.pt.ab_12xyz.tmp"]
    assert remove_outputs(tmp_path) == foreign
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == sorted(others + ["checkpoints", "model", "empty_folder_of_mine"])  # tunes/ emptied
    assert not (tmp_path / "tunes").exists()


def test_symlinks_are_entries_not_folders_to_enter(tmp_path):
    outside = tmp_path / "outside"
    touch(outside / "config.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(outside, target_is_directory=True)
    remove_outputs(run)
    assert (outside / "config.yaml").exists()  # nothing removed through the link


def test_config_changes_name_meaning_keys_and_let_run_length_and_logging_change():
    saved = {"runner": "r", "model": {"n_embd": 32}, "train": {"batch_size": 4, "seed": 0, "max_steps": 4,
                                                                  "log_every": 1, "lr": 1e-3},
             "eval": {"every": 2}, "generate": {"n_tunes": 2}, "description": "a"}
    new = json.loads(json.dumps(saved))
    new["train"].update(max_steps=10, log_every=5)
    new["eval"]["every"] = 3
    new["generate"]["n_tunes"] = 9
    new["description"] = "b"
    assert config_changes(saved, new) == ([], [])
    new["model"]["n_embd"] = 64
    new["train"].update(batch_size=8, seed=1, lr=2e-3)
    new["data"] = {"path": "x"}
    changed, one_side = config_changes(saved, new)
    assert changed == ["model.n_embd", "train.batch_size", "train.seed", "train.lr"]
    assert one_side == ["data.path"]


def test_the_lock_names_its_holder_and_is_free_again_after_release(tmp_path):
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
        with pytest.raises(UserError, match=f"another training \\(PID {os.getpid()}\\)"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    with RunLock(tmp_path):
        pass


def _folder_worker(rank: int, world: int, init_file: str, root: str) -> None:
    import torch.distributed as dist

    with gloo_process_group(rank, world, init_file):
        recipe = Recipe(RUNNER, ToyRunConfig(), Path("toy.yaml"))
        try:
            with training_folder(Path(root) / "busy", recipe):
                refused = ""
        except UserError as err:
            refused = str(err)
        fresh = Path(root) / "fresh"
        with training_folder(fresh, recipe) as folder:
            holder = (fresh / ".lock").read_text().split()[0]  # rank 0 has entered before anyone goes on
            dist.barrier()
        result = {"pid": os.getpid(), "refused": refused, "held": folder is not None, "holder": holder}
        Path(root, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_checks_and_locks_the_folder(tmp_path):
    touch(tmp_path / "busy" / "metrics.jsonl")
    mp.spawn(_folder_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert "run folder is not empty" in r0["refused"]
    assert r1["refused"].startswith("rank 0 refused the run folder: the run folder is not empty")
    assert r0["held"] and not r1["held"]
    assert r0["holder"] == r1["holder"] == str(r0["pid"])
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["config.yaml"]  # lock released
