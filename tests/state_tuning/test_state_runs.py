"""State tuning through the real runners and the command line: the music recipe
(music/abc_tiny_state) exports model.pth with the states and state.pth alone, the weights as they
were; `rwkv-mm generate --state` applies a state file; VisualRWKV's state-tuned stage 2 trains
only the projector and the LM's initial states."""

from __future__ import annotations

import json

import pytest
import torch

from robustness.cli_utils import assert_user_error, run_cli
from rwkv_mm.backbone import (SamplingConfig, generate_text, has_initial_state, load_model, load_tokenizer,
                              load_tuned_state, read_state_dict, save_model, save_tuned_state)
from rwkv_test_utils import tiny_model
from state_tuning.state_utils import random_state_

MUSIC = ["data.ctx_len=64", "data.max_train_tunes=64", "data.max_validation_tunes=8", "train.max_steps=3",
         "train.batch_size=4", "train.eval_every=3", "train.eval_batches=1", "train.save_every=3",
         "train.log_every=1", "generate.n_tunes=2", "generate.max_bytes=60"]


@pytest.fixture(scope="module")
def music_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("music_state")
    base = save_model(tiny_model("5", n_layer=2, n_embd=32, head_size=16, vocab_size=128), tmp / "base.pth")
    run_dir = tmp / "run"
    result = run_cli("train", "music/abc_tiny_state", f"init_from={base}", *MUSIC, "--run-dir", run_dir)
    assert result.rc == 0, result.err
    return base, run_dir


def test_music_recipe_exports_the_states_in_model_pth_and_alone(music_run):
    base, run_dir = music_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["state"] == str(run_dir / "state.pth")
    state = read_state_dict(run_dir / "state.pth")
    assert sorted(state) == ["blocks.0.att.time_state", "blocks.1.att.time_state"]
    before, after = read_state_dict(base), read_state_dict(run_dir / "model.pth")
    assert set(after) == set(before) | set(state)
    for key, value in before.items():
        assert torch.equal(after[key], value), key  # every weight frozen
    for key, value in state.items():
        assert torch.equal(after[key], value) and value.abs().sum() > 0, key
    tuned = load_model(run_dir / "model.pth")
    applied = load_tuned_state(load_model(base), run_dir / "state.pth")
    tokens = torch.tensor([[2, 88, 58, 49, 10, 77, 58, 52]])
    with torch.no_grad():
        assert torch.equal(tuned(tokens)[0], applied(tokens)[0])


def test_music_resume_continues(music_run, tmp_path):
    import shutil

    _, trained = music_run
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    base = trained.parent / "base.pth"
    result = run_cli("train", "music/abc_tiny_state", f"init_from={base}", *MUSIC, "train.max_steps=5",
                     "--run-dir", run_dir, "--resume")
    assert result.rc == 0, result.err
    steps = [json.loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    """A tiny World-vocabulary Finch (base.pth) and a random learned state for it (state.pth)."""
    tmp = tmp_path_factory.mktemp("world_state")
    model = tiny_model("6", n_layer=2, n_embd=32, head_size=16, vocab_size=65536, seed=3)
    base = save_model(model, tmp / "base.pth")
    state = save_tuned_state(random_state_(model, seed=4, scale=2.0), tmp / "state.pth")
    return base, state


def test_generate_with_state_applies_it(world_files):
    base, state = world_files
    args = ["generate", "--checkpoint", base, "--prompt", "The", "--max-tokens", "6", "--temperature", "0"]
    with_state, without = run_cli(*args, "--state", state), run_cli(*args)
    assert with_state.rc == 0 and without.rc == 0, with_state.err + without.err
    expected = generate_text(load_tuned_state(load_model(base), state), load_tokenizer("world"), "The", 6,
                             SamplingConfig(temperature=0.0))
    assert with_state.out == "The" + expected
    assert with_state.out != without.out


def test_generate_with_a_state_that_does_not_fit(world_files, tmp_path):
    base, _ = world_files
    other = save_tuned_state(random_state_(tiny_model("6", n_layer=3, n_embd=32, head_size=16, vocab_size=40)),
                             tmp_path / "three_layers.pth")
    args = ["generate", "--checkpoint", base, "--prompt", "The", "--max-tokens", "2"]
    assert_user_error(run_cli(*args, "--state", other), "three_layers.pth", "blocks.2.att.time_state")
    assert_user_error(run_cli(*args, "--state", base), "base.pth", "time_state")  # weights, no state
    assert_user_error(run_cli(*args, "--state", tmp_path / "missing.pth"), "missing.pth")


VISUAL = ["backbone.version=5", "backbone.n_layer=2", "backbone.n_embd=32", "backbone.head_size=16",
          "vision.custom.image_size=32", "vision.custom.width=32", "vision.custom.layers=1",
          "vision.custom.head_width=16", "data.max_samples=16", "data.ctx_len=96", "train.max_steps=2",
          "train.batch_size=4", "train.warmup_steps=0", "train.save_every=2", "train.log_every=1"]


@pytest.mark.slow
def test_visual_state_tuned_stage_trains_projector_and_states_only(tmp_path):
    from rwkv_mm.recipe import load_recipe
    from rwkv_mm.runners import get_runner
    from rwkv_mm.vision.checkpoint import load_visual_rwkv
    from rwkv_mm.vision.synth import build_synthetic_visual

    data = tmp_path / "synth"
    build_synthetic_visual(data, n_train=16, n_eval=2)
    common = VISUAL + [f"data.synthetic_root={data}", f"data.image_root={data}"]
    r1 = load_recipe("visual/stage1_tiny", common + [f"data.data_path={data}/stage1_captions.json"])
    get_runner(r1.runner).fn(r1.config, tmp_path / "s1", False)
    r2 = load_recipe("visual/stage2_tiny_state", common[4:] + [
        f"init_from={tmp_path}/s1/model", f"data.data_path={data}/stage2_qa.json", "eval.gqa_questions=",
        "eval.pope_questions="])
    summary = get_runner(r2.runner).fn(r2.config, tmp_path / "s2", False)
    before = read_state_dict(tmp_path / "s1" / "model" / "backbone.pth")
    after = read_state_dict(tmp_path / "s2" / "model" / "backbone.pth")
    state = read_state_dict(tmp_path / "s2" / "model" / "state.pth")
    assert sorted(state) == ["blocks.0.att.time_state", "blocks.1.att.time_state"]
    assert set(after) == set(before) | set(state)
    assert all(torch.equal(after[k], v) for k, v in before.items())  # every LM weight frozen
    p1 = read_state_dict(tmp_path / "s1" / "model" / "projector.pth")
    p2 = read_state_dict(tmp_path / "s2" / "model" / "projector.pth")
    assert not torch.equal(p1["weight"], p2["weight"])  # the projector trains beside the states
    assert summary["trainable_params"] == p1["weight"].numel() + 2 * 2 * 16 * 16
    model, _ = load_visual_rwkv(tmp_path / "s2" / "model", with_tower=False)
    assert has_initial_state(model.rwkv)
