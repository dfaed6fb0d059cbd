"""Bad samples met by data workers (issue 15): with `on_error: skip` what a worker's copy of the
dataset counts reaches the training process's counts (the run's summary), equal to reading
without workers; with `on_error: raise` the run stops with the same error naming the sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rwkv_mm.training.data_loading import BatchStream, train_tasks
from rwkv_mm.training.data_order import DataPosition
from robustness.cli_utils import assert_user_error, run_cli
from training.test_data_workers import no_workers_left


def test_the_feature_cache_is_what_keeps_llava_samples_in_the_training_process(tmp_path):
    from rwkv_mm.vision.data import LlavaDataset

    assert _llava(tmp_path, "skip").needs_main_process is None
    cached = LlavaDataset([], None, 4, features=lambda path: torch.zeros(4, 8))
    assert "data.cache_features" in cached.needs_main_process


# ----------------------------------------------------------------------------- skip counters
def _png(path, ok: bool) -> None:
    from PIL import Image
    if ok:
        Image.new("RGB", (20, 20), (30 * len(path.name) % 255, 80, 120)).save(path)
    else:
        path.write_bytes(b"not an image at all")


def _llava(tmp_path, on_error: str):
    from rwkv_mm.backbone import load_tokenizer
    from rwkv_mm.vision.data import LlavaDataset
    from rwkv_mm.vision.preprocess import ImageProcessor

    records = []
    for i in range(10):
        path = tmp_path / f"img{i}.png"
        _png(path, ok=i not in (2, 7))
        records.append({"id": f"s{i}", "image": path, "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": f"Shape {i}."}]})
    return LlavaDataset(records, load_tokenizer("world"), 4, ImageProcessor(16), ctx_len=64,
                        on_error=on_error)


@pytest.mark.parametrize("num_workers", (1, 2))
def test_skipped_images_found_in_workers_are_counted_in_the_training_process(tmp_path, num_workers):
    from rwkv_mm.vision.data import collate_llava

    counted = {}
    for n in (0, num_workers):
        dataset = _llava(tmp_path, "skip")
        tasks = train_tasks(len(dataset), 0, DataPosition(), 4, 0, 1, 2)
        stream = BatchStream(dataset, collate_llava, tasks, num_workers=n)
        try:
            ids = [b["ids"] for _ in range(6) for b in stream.next_step()[0]]
        finally:
            stream.close()
        counted[n] = (ids, dict(dataset.report.problems), dataset.report.examples)
    assert counted[num_workers] == counted[0]
    assert counted[0][1]["unreadable image"] >= 2  # 24 draws of 10 samples: each bad one seen twice or more
    assert "img2.png" in " ".join(counted[0][2])


def test_a_bad_image_in_a_worker_stops_the_run_naming_the_sample(tmp_path):
    from rwkv_mm.vision.data import SampleError, collate_llava

    errors = []
    for n in (0, 2):
        dataset = _llava(tmp_path, "raise")
        stream = BatchStream(dataset, collate_llava, train_tasks(10, 0, DataPosition(), 4, 0, 1, 2), num_workers=n)
        with pytest.raises(SampleError) as err:
            for _ in range(5):
                stream.next_step()
        errors.append((str(err.value), err.value.reason))
        assert no_workers_left()
    assert errors[0] == errors[1] and "cannot read image" in errors[0][0] and errors[0][1] == "unreadable image"


def _clips(tmp_path):
    import soundfile as sf

    from rwkv_mm.audio.datasets import AudioTaggingDataset, ClipRecord
    from rwkv_mm.audio.sampler import BalancedDraws, balanced_weights

    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        path = tmp_path / f"clip{i}.wav"
        if i in (3, 6):
            path.write_bytes(b"RIFF broken")
        else:
            sf.write(path, (0.3 * rng.standard_normal(4000)).astype(np.float32), 16000)
        records.append(ClipRecord(f"clip{i}", path, [i % 3], f"list.csv:{i + 2}"))
    clips = AudioTaggingDataset(records, 3, 1600, 16000, random_crop=True, min_seconds=0.01)
    return clips, BalancedDraws(clips, balanced_weights(clips.targets()))


def _collate_clips(samples):
    from rwkv_mm.audio.datasets import collate_clips

    return collate_clips(samples)


def test_bad_clips_found_in_workers_are_counted_once_with_balanced_draws(tmp_path):
    """Weighted draws and random crops repeat across worker counts; each bad clip is counted
    once, as in the training process, however many workers found it."""
    got = {}
    for n in (0, 2):
        clips, draws = _clips(tmp_path)
        tasks = train_tasks(len(draws), 0, DataPosition(), 4, 0, 1, 2)
        stream = BatchStream(draws, _collate_clips, tasks, num_workers=n)
        try:
            batches = [b for _ in range(12) for b in stream.next_step()[0]]
        finally:
            stream.close()
        got[n] = (batches, dict(clips.problems.counts), sorted(clips.bad))
    assert got[2][1] == got[0][1] and got[2][2] == got[0][2] == [3, 6]
    assert got[0][1] == {"unreadable": 2}
    for a, b in zip(got[0][0], got[2][0]):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["wave"], b["wave"])


# ----------------------------------------------------------------------------- the visual runner
@pytest.fixture()
def bad_synth(tmp_path):
    """The tiny synthetic visual set with the image of sample qa2 corrupted."""
    from rwkv_mm.vision.synth import build_synthetic_visual

    data = build_synthetic_visual(tmp_path / "synth", n_train=16, n_eval=2)
    sample = json.loads((data / "stage2_qa.json").read_text())[2]
    (data / sample["image"]).write_bytes(b"not a png")
    return data, sample["id"]


def test_the_visual_runner_counts_what_its_workers_skipped(bad_synth, tmp_path):
    """One epoch (16 samples, 4 steps of 4): the bad image is met once, in a worker or here."""
    from training.test_visual_fsdp_export import run_visual

    data, sample_id = bad_synth
    summaries = {n: run_visual(data, tmp_path / f"w{n}", "data.on_error=skip", "data.cache_features=false",
                               "train.max_steps=4", f"train.num_workers={n}") for n in (0, 2)}
    assert summaries[0]["skipped_samples"] == summaries[2]["skipped_samples"] >= 1
    assert summaries[2]["skipped_report"] == summaries[0]["skipped_report"]
    assert sample_id in summaries[2]["skipped_report"] and "unreadable image" in summaries[2]["skipped_report"]
    assert no_workers_left()


def test_a_bad_image_met_by_a_worker_is_one_error_line_naming_the_sample(bad_synth, tmp_path):
    from training.test_visual_fsdp_export import overrides

    data, sample_id = bad_synth
    result = run_cli("train", "visual/stage1_tiny", *overrides(data, "data.cache_features=false",
                                                               "train.max_steps=4", "train.num_workers=2"),
                     "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert_user_error(result, f"sample {sample_id}", "cannot read image")
    assert no_workers_left()
