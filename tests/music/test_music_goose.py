"""The lm_music runner with the Goose (RWKV-7) backbone (`backbone.version=7`): trains a few
steps, saves an x070-layout model, and the music commands generate from it."""

from __future__ import annotations

import json

import pytest

from rwkv_mm.backbone import Goose, load_model, read_state_dict
from rwkv_mm.cli import main

FAST = ["backbone.version=7", "backbone.n_layer=2", "backbone.n_embd=32", "backbone.head_size=16",
        "data.ctx_len=64", "data.max_train_tunes=64", "data.max_validation_tunes=8", "train.max_steps=3",
        "train.batch_size=4", "train.eval_every=3", "train.eval_batches=1", "train.save_every=3",
        "train.log_every=1", "generate.n_tunes=2", "generate.max_bytes=60"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("music_goose") / "run"
    assert main(["train", "music/abc_tiny", *FAST, "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_runner_trains_and_saves_a_goose_model(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["n_tunes"] == 2
    model = load_model(trained / "model.pth")
    assert isinstance(model, Goose) and model.config.vocab_size == 128 and model.config.n_layer == 2
    assert "blocks.1.att.v1" in read_state_dict(trained / "model.pth")  # the x070 layout
    losses = [json.loads(line)["loss"] for line in (trained / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses)


def test_music_generate_from_the_goose_model(trained, tmp_path, capsys):
    out = tmp_path / "tunes"
    assert main(["music", "generate", "--checkpoint", str(trained / "model.pth"), "--n", "2",
                 "--prompt", "L:1/8\\nM:4/4\\nK:G\\n", "--max-bytes", "40", "--out", str(out)]) == 0
    assert "tunes parse into a score" in capsys.readouterr().out
    assert "K:G" in (out / "tune_000.abc").read_text()
