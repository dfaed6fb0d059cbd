"""The synthetic sound-event set: deterministic, multi-label, AudioSet layout, damaged entries."""

from __future__ import annotations

import numpy as np

from rwkv_mm.audio.datasets import ProblemLog, read_class_labels, read_clip_list
from rwkv_mm.audio.synth import SYNTH_CLASSES, SynthConfig, build_synth, synth_clip


def test_clips_are_deterministic_and_carry_one_to_three_events():
    cfg = SynthConfig(clip_seconds=1.0)
    a = synth_clip(np.random.default_rng([0, 0, 5]), cfg)
    b = synth_clip(np.random.default_rng([0, 0, 5]), cfg)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    seen = set()
    for i in range(60):
        wave, kinds = synth_clip(np.random.default_rng([0, 0, i]), cfg)
        assert wave.shape == (16000,) and wave.dtype == np.float32
        assert 1 <= len(kinds) <= 3 and len(set(kinds)) == len(kinds)
        assert 0.29 < np.abs(wave).max() <= 0.9 + 1e-6
        seen.update(kinds)
    assert seen == set(range(len(SYNTH_CLASSES)))


def test_build_writes_audioset_layout_and_damage_is_reported(tmp_path):
    cfg = SynthConfig(out=str(tmp_path / "s"), n_train=12, n_eval=5, clip_seconds=0.5)
    out = build_synth(cfg)
    mtime = (out / "synth_info.json").stat().st_mtime_ns
    assert build_synth(cfg) == out and (out / "synth_info.json").stat().st_mtime_ns == mtime  # reused
    classes = read_class_labels(out / "class_labels_indices.csv")
    assert len(classes) == 10
    problems = ProblemLog()
    train = read_clip_list(out / "train_segments.csv", classes, [out / "clips"], problems)
    assert len(train) == 12 + 3  # silent, short and corrupt files exist; the missing one does not
    assert problems.summary() == {"unknown_label": 1, "no_labels": 1, "missing": 1}
    same = read_clip_list(out / "train.json", classes, None, ProblemLog())
    assert [r.labels for r in same] == [r.labels for r in train]
    assert len(read_clip_list(out / "eval_segments.csv", classes, [out / "clips"], ProblemLog())) == 5
    build_synth(SynthConfig(out=str(tmp_path / "s"), n_train=12, n_eval=6, clip_seconds=0.5))  # changed → rebuilt
    assert len(read_clip_list(out / "eval.json", classes, None, ProblemLog())) == 6
