"""The audio_tagging runner end to end on a small generated set (few steps), resume, recipes."""

from __future__ import annotations

import json

import pytest

from rwkv_mm.cli import main
from rwkv_mm.recipe import load_recipe


def fast(tmp) -> list[str]:
    root = tmp / "synth"
    return [f"data.synthetic.out={root}", "data.synthetic.n_train=24", "data.synthetic.n_eval=12",
            "data.synthetic.clip_seconds=0.6", f"data.class_labels={root}/class_labels_indices.csv",
            f"data.train={root}/train_segments.csv", f"data.eval={root}/eval.json",
            f"data.clip_dirs=[{root}/clips]", "features.target_frames=48", "features.num_mel_bins=32",
            "backbone.n_layer=1", "backbone.n_embd=32", "backbone.head_size=16", "model.patch=[8, 8]",
            "model.stride=[8, 8]", "backbone.tm_lora_rank=4", "backbone.decay_lora_rank=4",
            "augment.mixup=0.5", "augment.freq_mask=4", "augment.time_mask=8",
            "train.max_steps=4", "train.batch_size=8", "train.micro_batch_size=4", "train.warmup_steps=1",
            "train.eval_every=2", "train.eval_batches=1", "train.save_every=2", "train.log_every=1",
            "eval.every=2", "eval.snapshot_every=1", "eval.keep_snapshots=3", "eval.average_last=3",
            "eval.batch_size=5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audio")
    run_dir = tmp / "run"
    assert main(["train", "audio/synth_tiny", *fast(tmp), "--run-dir", str(run_dir)]) == 0
    return tmp, run_dir


def test_runner_writes_models_metrics_plots_and_report(trained):
    _, run_dir = trained
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and 0.0 <= summary["mAP"] <= 1.0 and 0.0 <= summary["AUC"] <= 1.0
    assert summary["eval_clips"] == 12 and summary["classes_scored"] + summary["classes_without_positives"] == 10
    assert summary["averaged_snapshots"] == 3 and 0.0 <= summary["mAP_averaged"] <= 1.0
    assert summary["train_problems"]["missing"] == 1 and summary["train_problems"]["no_labels"] == 1
    assert summary["bad_train_clips"] >= 2  # + silent/short/corrupt when they were drawn
    for name in ("model.pt", "model_avg.pt", "ap.png", "loss.png", "data_report.txt", "config.yaml"):
        assert (run_dir / name).exists(), name
    assert len(list((run_dir / "checkpoints").glob("step_*.pt"))) == 3
    steps = [json.loads(l)["step"] for l in (run_dir / "map.jsonl").read_text().splitlines()]
    assert steps == [2, 4]


def test_tag_command_on_the_trained_model(trained, capsys):
    from rwkv_mm.cli import build_parser

    tmp, run_dir = trained
    clip = sorted((tmp / "synth" / "clips").glob("ev*.wav"))[0]
    args = build_parser().parse_args(["audio", "tag", str(clip), "--checkpoint", str(run_dir / "model.pt"), "--top-k", "3"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all("(/synth/" in line for line in out[1:])


def test_resume_continues_the_same_run(trained, tmp_path):
    import shutil

    tmp, run_dir = trained
    resumed = tmp_path / "run"
    shutil.copytree(run_dir, resumed)
    assert main(["train", "audio/synth_tiny", *fast(tmp), "train.max_steps=6", "--run-dir", str(resumed),
                 "--resume"]) == 0
    steps = [json.loads(l)["step"] for l in (resumed / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("name", ["audio/synth_tiny", "audio/audioset_t", "audio/audioset_s"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(name)
    assert recipe.runner == "audio_tagging"


def test_model_sizes_set_by_data_must_agree(tmp_path):
    with pytest.raises(ValueError, match="model.num_mel_bins=64: expected unset .it disagrees"):
        from rwkv_mm.runners.audio_tagging import resolve_model_config

        cfg = load_recipe("audio/synth_tiny", ["model.num_mel_bins=64", "features.num_mel_bins=32"]).config
        resolve_model_config(cfg, 10)
