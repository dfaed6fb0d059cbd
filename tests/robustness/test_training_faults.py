"""Training faults (issue 13, items 3 and 6): settings that train nothing or nonsense are refused
with the dotted key and the file, a non-finite loss or gradient stops training naming the step
(or is skipped, `train.skip_nonfinite`), no checkpoint holds NaN weights, and a kill or a full
disk during a save leaves the previous checkpoint loadable and no temp file behind."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustness.cli_utils import assert_user_error, run_cli
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.trainer import IGNORE_INDEX, Trainer
from training.toy_run import collate, make_dataset, make_model, toy_recipe  # noqa: F401 (fixture)

TESTS = Path(__file__).resolve().parents[1]


def train(recipe: Path, run_dir: Path, *args: str):
    return run_cli("train", str(recipe), *args, "--run-dir", str(run_dir))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def all_finite(path: Path) -> bool:
    model = torch.load(path, weights_only=True)["model"]
    return all(bool(torch.isfinite(t).all()) for t in model.values() if t.is_floating_point())


@pytest.mark.parametrize("override, expected", [
    ("train.batch_size=-4", "expected an int >= 1"),      # "trained" at loss 0.0, exit 0
    ("train.batch_size=0", "expected an int >= 1"),       # ZeroDivisionError
    ("train.eval_batches=0", "expected an int >= 1"),     # reported val_loss 0.0
    ("train.lr=.inf", "expected a finite number > 0"),    # trained on silently
    ("train.lr=.nan", "expected a finite number > 0"),
    ("train.max_steps=0", "expected an int >= 1"),        # trained nothing, exit 0
    ("train.max_steps=-3", "expected an int >= 1"),
    ("train.micro_batch_size=3", "a divisor of batch_size (4)"),
    ("train.betas=[0.9, 1.5]", "two numbers in [0, 1)"),
    ("train.precision=fp16", "one of 'auto', 'bf16', 'fp32'"),
    ("train.strategy=zero3", "one of 'ddp', 'fsdp'"),
    ("train.grad_clip=-1", ">= 0"),
    ("train.skip_nonfinite=-1", "expected an int >= 0"),
])
def test_train_settings_are_checked_naming_key_and_file(toy_recipe, tmp_path, override, expected):
    result = train(toy_recipe, tmp_path / "run", override)
    assert_user_error(result, "toy.yaml", override.split("=")[0], expected)
    assert not (tmp_path / "run").exists()


def test_train_config_checks_every_field_in_python_too():
    with pytest.raises(ValueError, match="log_every=0"):
        TrainConfig(log_every=0)
    with pytest.raises(ValueError, match="adam_eps=0"):
        TrainConfig(adam_eps=0)
    with pytest.raises(ValueError, match="freeze"):
        TrainConfig(freeze=[""])


def test_nan_weights_stop_training_at_step_1_without_a_checkpoint(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    result = train(toy_recipe, run_dir, "nan_weights=true")
    assert_user_error(result, "step 1", "non-finite loss", str(run_dir), "train.skip_nonfinite")
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    assert not (run_dir / ".lock").exists()


def test_a_learning_rate_that_blows_up_stops_naming_the_step(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    result = train(toy_recipe, run_dir, "train.lr=1e30", "train.max_steps=8", "train.save_every=1")
    assert_user_error(result, "training stopped at step", "non-finite", str(run_dir))
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert not checkpoint.exists() or all_finite(checkpoint)


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    """Weights that became inf while the loss was still finite: the save refuses, naming the step."""
    trainer = Trainer(make_model(), TrainConfig(max_steps=2, batch_size=2, eval_every=0, save_every=1),
                      tmp_path, make_dataset(4), collate, device="cpu")

    def poison(t, _):
        with torch.no_grad():
            t.model.blocks[0].att.key.weight[0, 0] = float("inf")

    with pytest.raises(ValueError, match=r"non-finite weights after step 1 \(blocks.0.att.key.weight\)"):
        trainer.fit(on_step=poison)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_skip_nonfinite_tolerates_n_bad_steps_and_logs_them(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    result = train(toy_recipe, run_dir, "nan_steps=[2, 3]", "train.skip_nonfinite=2")
    assert result.rc == 0, result.err
    assert "skipped_steps  2" in result.out
    skipped = [r["step"] for r in records(run_dir) if "skipped" in r]
    assert skipped == [2, 3]
    assert [r["step"] for r in records(run_dir) if "loss" in r] == [1, 4]
    assert all_finite(run_dir / "checkpoints" / "last.pt")
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["skipped_steps"] == 2

    result = train(toy_recipe, tmp_path / "run2", "nan_steps=[2, 3]", "train.skip_nonfinite=1")
    assert_user_error(result, "training stopped at step 3", "after 1 skipped step(s)")


def test_a_skipped_step_leaves_the_weights_and_optimizer_alone(tmp_path):
    bad_step = 2
    trainer: list[Trainer] = []

    def loss_fn(model, batch):
        from rwkv_mm.training.trainer import lm_loss

        loss_sum, n, logits = lm_loss(model, batch)
        return (loss_sum * float("nan") if trainer[0].step + 1 == bad_step else loss_sum), n, logits

    cfg = TrainConfig(max_steps=3, batch_size=2, eval_every=0, save_every=0, skip_nonfinite=1)
    trainer.append(Trainer(make_model(), cfg, tmp_path, make_dataset(6), collate, loss_fn=loss_fn, device="cpu"))
    seen = {}

    def snapshot(t, record):
        seen[t.step] = ({k: v.clone() for k, v in t.model.state_dict().items()},
                        t.optimizer.state_dict()["state"][0]["step"].item(), "skipped" in record)

    summary = trainer[0].fit(on_step=snapshot)
    assert summary["skipped_steps"] == 1 and seen[2][2] and not seen[3][2]
    assert all(torch.equal(seen[1][0][k], seen[2][0][k]) for k in seen[1][0])  # no update at step 2
    assert seen[1][1] == seen[2][1] == 1 and seen[3][1] == 2  # AdamW's step count too


def test_validation_without_target_tokens_reports_no_loss(tmp_path):
    eval_set = make_dataset(4)
    for sample in eval_set:
        sample["targets"][:] = IGNORE_INDEX
    cfg = TrainConfig(max_steps=1, batch_size=2, eval_every=1, eval_batches=1, save_every=0)
    trainer = Trainer(make_model(), cfg, tmp_path, make_dataset(4), collate, eval_set=eval_set, device="cpu")
    assert trainer.evaluate() is None  # was 0.0
    assert trainer.fit()["val_loss"] is None
    assert not any("val_loss" in r for r in records(tmp_path))


CHILD = """
import sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from training.toy_run import register
register()
real_save, saves = torch.save, []

def save(obj, f, *args, **kwargs):  # the second checkpoint: half written, then the kill arrives
    if "last.pt" in str(f):
        saves.append(f)
        if len(saves) == 2:
            with open(f, "wb") as out:
                out.write(b"PK half a checkpoint")
            print("SAVING", flush=True)
            time.sleep(600)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
from rwkv_mm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_a_save_leaves_no_temp_file_after_the_next_start(toy_recipe, tmp_path):
    run_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(TESTS)), "train", str(toy_recipe),
                              "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    try:
        assert any(line.strip() == "SAVING" for line in child.stdout), "the child never reached the save"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    orphans = list((run_dir / "checkpoints").glob("last.pt.*.tmp"))
    assert len(orphans) == 1  # what the kill left
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 2  # previous

    result = train(toy_recipe, run_dir, "train.max_steps=6", "--resume")
    assert result.rc == 0, result.err
    assert list(run_dir.rglob("*.tmp")) == [] and not (run_dir / ".lock").exists()
    assert f"stale lock of PID {child.pid}" in result.err and str(orphans[0]) in result.err
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 6
    assert [r["step"] for r in records(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(toy_recipe, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        if "last.pt" in str(f):
            saves.append(f)
            if len(saves) == 2:  # the second checkpoint finds the disk full halfway
                with open(f, "wb") as out:
                    out.write(b"PK half a checkpoint")
                    raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    result = train(toy_recipe, run_dir)
    assert_user_error(result, "disk full", str(run_dir / "checkpoints" / "last.pt"))
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    assert list(run_dir.rglob("*.tmp")) == [] and not (run_dir / ".lock").exists()
    assert train(toy_recipe, run_dir, "--resume").rc == 0  # and the run goes on from there
