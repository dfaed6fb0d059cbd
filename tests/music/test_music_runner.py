"""The lm_music runner end to end (tiny), its resume, the music commands and the quickstart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rwkv_mm.backbone import load_model
from rwkv_mm.cli import main

FAST = ["backbone.n_layer=1", "backbone.n_embd=32", "backbone.head_size=16", "data.ctx_len=64",
        "data.max_train_tunes=64", "data.max_validation_tunes=8", "train.max_steps=3",
        "train.batch_size=4", "train.eval_every=3", "train.eval_batches=1", "train.save_every=3",
        "train.log_every=1", "generate.n_tunes=2", "generate.max_bytes=60"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("music") / "run"
    assert main(["train", "music/abc_tiny", *FAST, "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_runner_writes_model_tunes_metrics_and_summary(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["n_tunes"] == 2
    assert 0.0 <= summary["parse_rate"] <= 1.0
    model = load_model(trained / "model.pth")
    assert model.config.vocab_size == 128 and model.config.n_layer == 1
    assert len(list((trained / "tunes").glob("*.abc"))) == 2
    assert (trained / "loss.png").exists() and (trained / "config.yaml").exists()


def test_resume_continues_to_more_steps(trained, tmp_path):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(trained, run_dir)
    assert main(["train", "music/abc_tiny", *FAST, "train.max_steps=5", "--run-dir", str(run_dir), "--resume"]) == 0
    steps = [json.loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4, 5]


def test_music_generate_and_eval_positions(trained, tmp_path, capsys):
    out = tmp_path / "tunes"
    assert main(["music", "generate", "--checkpoint", str(trained / "model.pth"), "--n", "2",
                 "--control-codes", "S:2\\nB:8", "--prompt", "L:1/8\\nM:4/4\\nK:G\\n",
                 "--max-bytes", "40", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tunes parse into a score" in text
    first = (out / "tune_000.abc").read_text()
    assert "K:G" in first and "S:2" not in first  # control codes are not ABC: stripped on writing
    png = tmp_path / "pos.png"
    assert main(["music", "eval-positions", "--checkpoint", str(trained / "model.pth"),
                 "--max-len", "64", "--max-tunes", "10", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


QUICK = ["train.max_steps=2", "train.batch_size=4", "train.save_every=2", "train.log_every=1",
         *(f"music/abc_tiny:{o}" for o in FAST if not o.startswith("train.")),
         "music/abc_tiny:train.eval_every=2", "music/abc_tiny:train.eval_batches=1",
         "visual/stage1_tiny:backbone.n_layer=1", "visual/stage1_tiny:backbone.n_embd=32",
         "visual/stage1_tiny:backbone.head_size=16", "visual/stage1_tiny:data.max_samples=8",
         "visual/stage2_tiny:data.max_samples=8", "visual/stage2_tiny:eval.max_questions=4",
         "audio/synth_tiny:backbone.n_layer=1", "audio/synth_tiny:backbone.n_embd=32",
         "audio/synth_tiny:backbone.head_size=16", "audio/synth_tiny:train.eval_every=2",
         "audio/synth_tiny:eval.every=2", "audio/synth_tiny:eval.snapshot_every=1",
         "audio/synth_tiny:data.synthetic.n_train=24", "audio/synth_tiny:data.synthetic.n_eval=12"]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_runs_every_part(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the parts' generated data goes under the temp folder
    music_data = [f"music/abc_tiny:data.train={REPO}/data/music/train.json",
                  f"music/abc_tiny:data.validation={REPO}/data/music/validation.json"]
    assert main(["quickstart", "--out", str(tmp_path / "qs"), *QUICK, *music_data]) == 0
    out = capsys.readouterr().out
    assert "quickstart summary" in out and "parse_rate" in out
    assert (tmp_path / "qs" / "abc_tiny" / "model.pth").exists()
    assert (tmp_path / "qs" / "stage2_tiny" / "model" / "backbone.pth").exists()
    assert "gqa_accuracy" in out and "mAP" in out


def test_quickstart_rejects_an_unknown_part(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), "nope/x:train.lr=1"]) == 2
    assert "no quickstart part" in capsys.readouterr().err


def test_quickstart_part_writes_the_summary_json_under_the_working_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: the bundled corpus is found where rwkv_mm is
    quick = [o for o in QUICK if o.startswith(("train.", "music/abc_tiny:"))]
    assert main(["quickstart", "--only", "music", *quick]) == 0
    assert "written to runs/quickstart/quickstart_summary.json" in capsys.readouterr().out
    record = json.loads((tmp_path / "runs/quickstart/quickstart_summary.json").read_text())
    assert record["complete"] and record["only"] == ["music"] and record["overrides"] == quick
    machine = record["machine"]
    assert machine["cpu_count"] >= 1 and len(machine["load_average"]) == 3
    assert machine["torch"] and machine["date"].endswith("+00:00")
    (part,) = record["parts"]
    assert part["recipe"] == "music/abc_tiny" and part["run_dir"] == "runs/quickstart/abc_tiny"
    assert set(part["metrics"]) == {"train_loss", "val_loss", "parse_rate", "tunes_dir"}
    assert part["wall_s"] > 0 and record["total_wall_s"] == part["wall_s"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_quickstart_rejects_an_unknown_modality(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), "--only", "music,sound"]) == 2
    assert "--only sound: no modality is named 'sound'" in capsys.readouterr().err
