"""AudioRWKV's inputs as a careless user gives them: NaN/Inf samples, clips shorter than one fbank
window, files that are not audio, bad flags and config values, broken lists and checkpoints.
Each is refused with the culprit named (exit status 2) or, inside a dataset, skipped and counted;
nothing non-finite is ever written into a stats file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from robustness.cli_utils import assert_user_error, run_cli
from rwkv_mm.audio.checkpoint import save_tagger
from rwkv_mm.audio.config import AudioDataConfig, AudioFeaturesConfig, load_splits
from rwkv_mm.audio.datasets import AudioTaggingDataset, ClipRecord, ProblemLog, index_clip_folders
from rwkv_mm.audio.fbank import FbankConfig
from rwkv_mm.audio.features import AudioFeatures, FeatureStats
from rwkv_mm.audio.io import AUDIO_EXTENSIONS, AudioLoadError, load_audio
from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig
from rwkv_mm.backbone import RWKVConfig
from rwkv_mm.errors import UserError

SR = 16000


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def write(path, wave: np.ndarray, sr: int = SR):
    """A float32 wav (the only common format that stores NaN/Inf as they are)."""
    sf.write(path, wave, sr, subtype="FLOAT")
    return path


def with_bad_sample(value: float, n: int = 8000) -> np.ndarray:
    wave = noise(n)
    wave[123] = value
    return wave


def make_tagger(path, frame_length_ms: float = 25.0):
    torch.manual_seed(0)
    cfg = AudioRWKVConfig(backbone=RWKVConfig(n_layer=1, n_embd=32, head_size=16, dim_ffn=128, tm_lora_rank=4,
                                              decay_lora_rank=4),
                          patch=(8, 8), stride=(8, 8), num_classes=3, num_mel_bins=32, target_frames=48)
    features = AudioFeatures(FbankConfig(num_mel_bins=32, frame_length_ms=frame_length_ms), 48)
    return save_tagger(path, AudioRWKV(cfg), features, ["/m/a", "/m/b", "/m/c"], ["a", "b", "c"])


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return make_tagger(tmp_path_factory.mktemp("tagger") / "model.pt")


def tag(tmp_path, ckpt, *files, top_k: str = "2"):
    return run_cli("audio", "tag", *map(str, files), "--checkpoint", str(ckpt), "--top-k", top_k, cwd=tmp_path)


# ----------------------------------------------------------------------------- audio tag
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_tag_refuses_non_finite_samples_naming_the_file(tmp_path, tagger, value):
    clip = write(tmp_path / "broken.wav", with_bad_sample(value))
    result = tag(tmp_path, tagger, clip)
    assert_user_error(result, "broken.wav", "non-finite", "sample 123")
    assert "nan" not in result.out  # before: "nan  a (/m/a)" scores, exit 0


def test_tag_refuses_scores_that_are_not_finite(tmp_path, tagger):
    clip = write(tmp_path / "loud.wav", noise(8000, scale=1e30))  # finite samples whose power overflows
    assert_user_error(tag(tmp_path, tagger, clip), "loud.wav", "non-finite scores")


@pytest.mark.parametrize("n", [0, 1, 399])
def test_tag_refuses_clips_shorter_than_one_fbank_window(tmp_path, tagger, n):
    clip = write(tmp_path / "tiny.wav", noise(n))
    assert_user_error(tag(tmp_path, tagger, clip), "tiny.wav", "too short", "400")


def test_the_shortest_clip_is_one_window_of_the_checkpoints_fbank(tmp_path, tagger):
    clip = write(tmp_path / "c.wav", noise(600))
    assert tag(tmp_path, tagger, clip).rc == 0  # 600 >= 400 samples (25 ms)
    long_window = make_tagger(tmp_path / "m50.pt", frame_length_ms=50.0)  # 800 samples
    assert_user_error(tag(tmp_path, long_window, clip), "c.wav", "too short", "800")


def test_tag_bad_files_are_named_and_the_good_ones_still_tagged(tmp_path, tagger):
    good = write(tmp_path / "good.wav", noise(8000))
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "folder.wav").mkdir()
    result = tag(tmp_path, tagger, tmp_path / "missing.wav", good, tmp_path / "notes.txt", tmp_path / "folder.wav")
    assert result.rc == 2 and "Traceback" not in result.err  # before: exit 1 (now reserved for bugs)
    errors = [ln for ln in result.err.splitlines() if ln.startswith("rwkv-mm: error:")]
    assert len(errors) == 3
    assert "missing.wav" in errors[0] and "no such audio file" in errors[0]
    assert "notes.txt" in errors[1] and "unreadable" in errors[1]
    assert "folder.wav" in errors[2] and "not an audio file" in errors[2]
    assert result.out.splitlines()[0] == str(good) and len(result.out.splitlines()) == 3


@pytest.mark.parametrize("k", ["0", "-1", "two"])
def test_tag_top_k_must_be_positive(tmp_path, tagger, k):
    result = tag(tmp_path, tagger, write(tmp_path / "good.wav", noise(8000)), top_k=k)
    assert result.rc == 2 and "Traceback" not in result.err and "internal error" not in result.err
    assert "--top-k" in result.err and repr(k) in result.err  # before: 0 → no labels, exit 0; -1 → exit 1


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "pickle"])
def test_unreadable_tagger_checkpoint_is_named(tmp_path, tagger, damage):
    bad = tmp_path / "bad.pt"
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        data = tagger.read_bytes()
        bad.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"not a checkpoint " * 40)
    else:  # an object the safe loader refuses
        torch.save({"format": "rwkv_mm.audio_tagger/1", "when": np.random.default_rng(0)}, bad)
    result = tag(tmp_path, bad, write(tmp_path / "good.wav", noise(8000)))
    assert_user_error(result, "bad.pt")
    assert "weights_only=False" not in result.err  # torch's unsafe-retry hint is never repeated


# ----------------------------------------------------------------------------- audio stats
def test_stats_of_a_folder_skips_bad_clips_and_writes_finite_numbers(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write(clips / "good.wav", noise(8000))
    write(clips / "nan.wav", with_bad_sample(math.nan))
    write(clips / "inf.wav", with_bad_sample(math.inf))
    write(clips / "one.wav", noise(1))
    result = run_cli("audio", "stats", "clips", "--out", "stats.json", "--num-mel-bins", "32", cwd=tmp_path)
    assert result.rc == 0, result.err
    for name in ("nan.wav", "inf.wav", "one.wav"):
        assert any(name in ln and ln.startswith("skipped:") for ln in result.err.splitlines()), name
    text = (tmp_path / "stats.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # before: "mean": NaN
    stats = json.loads(text)
    assert math.isfinite(stats["mean"]) and stats["std"] > 0 and stats["n_clips"] == 1


def test_stats_refuse_to_write_non_finite_numbers(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write(clips / "loud.wav", noise(8000, scale=1e30))  # finite samples whose power overflows
    result = run_cli("audio", "stats", "clips", "--out", "stats.json", "--num-mel-bins", "32", cwd=tmp_path)
    assert_user_error(result, "no fbank frames")
    assert "loud.wav" in result.err and not (tmp_path / "stats.json").exists()
    with pytest.raises(UserError, match="not finite"):
        FeatureStats(mean=math.nan, std=1.0).save(tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


def test_stats_file_with_nan_is_refused_naming_it(tmp_path):
    (tmp_path / "s.json").write_text('{"mean": NaN, "std": 1.0}')
    with pytest.raises(UserError, match=r"'mean' must be a finite number.*s\.json"):
        FeatureStats.load(tmp_path / "s.json")


def small_set(tmp_path, clips: dict[str, np.ndarray]):
    """A class list and a manifest listing `clips` (name → waveform), all labelled /m/a."""
    (tmp_path / "cls.csv").write_text("index,mid,display_name\n0,/m/a,A\n1,/m/b,B\n")
    for name, wave in clips.items():
        write(tmp_path / name, wave)
    (tmp_path / "m.json").write_text(json.dumps({"data": [{"wav": n, "labels": "/m/a"} for n in clips]}))
    return ["data.synthetic=null", f"data.class_labels={tmp_path / 'cls.csv'}", f"data.train={tmp_path / 'm.json'}",
            f"data.eval={tmp_path / 'm.json'}"]


def test_stats_of_a_recipe_skip_and_count_non_finite_clips(tmp_path):
    overrides = small_set(tmp_path, {"good.wav": noise(8000), "inf.wav": with_bad_sample(math.inf),
                                     "nan.wav": with_bad_sample(math.nan)})
    result = run_cli("audio", "stats", "audio/synth_tiny", *overrides, "--out", "stats.json", cwd=tmp_path)
    assert result.rc == 0, result.err
    assert "non_finite 2" in result.out and "inf.wav" in result.out and "nan.wav" in result.out
    stats = json.loads((tmp_path / "stats.json").read_text())  # before: the Inf clip made it NaN
    assert math.isfinite(stats["mean"]) and math.isfinite(stats["std"])


# ----------------------------------------------------------------------------- datasets
def test_dataset_skips_and_counts_non_finite_and_sub_window_clips(tmp_path):
    clips = {"good.wav": noise(8000), "nan.wav": with_bad_sample(math.nan), "inf.wav": with_bad_sample(math.inf),
             "one.wav": noise(1), "short.wav": noise(399)}
    records = [ClipRecord(n, write(tmp_path / n, w), [0], f"list.csv:{i + 1}") for i, (n, w) in enumerate(clips.items())]
    problems = ProblemLog()
    ds = AudioTaggingDataset(records, 1, clip_samples=8000, min_seconds=0.0, problems=problems, window_samples=400)
    assert [ds.load(i) is not None for i in range(len(ds))] == [True, False, False, False, False]
    assert problems.summary() == {"non_finite": 2, "too_short": 2}  # before: NaN "silent", Inf and 1 sample loaded
    report = problems.format()
    for name in ("nan.wav", "inf.wav", "one.wav", "short.wav"):
        assert name in report
    assert ds[1]["index"] == 0  # training draws the next good clip


def test_load_splits_takes_the_window_from_the_features_config(tmp_path):
    small_set(tmp_path, {"good.wav": noise(8000), "c600.wav": noise(600)})
    data = AudioDataConfig(class_labels=str(tmp_path / "cls.csv"), train=str(tmp_path / "m.json"),
                           eval=str(tmp_path / "m.json"), min_seconds=0.0)
    for frame_ms, kept in ((25.0, 2), (50.0, 1)):  # 400 / 800 samples per window
        splits = load_splits(data, AudioFeaturesConfig(num_mel_bins=32, target_frames=48, frame_length_ms=frame_ms))
        assert sum(splits.train.load(i) is not None for i in range(2)) == kept


# ----------------------------------------------------------------------------- lists
def test_broken_lists_name_file_and_line(tmp_path):
    (tmp_path / "cls.csv").write_text("index,mid,display_name\n0,/m/a,A\n2,/m/b,B\n")
    (tmp_path / "m.json").write_text('{"data": [')
    overrides = ["data.synthetic=null", f"data.class_labels={tmp_path / 'cls.csv'}",
                 f"data.train={tmp_path / 'm.json'}", f"data.eval={tmp_path / 'm.json'}"]
    result = run_cli("audio", "stats", "audio/synth_tiny", *overrides, cwd=tmp_path)
    assert_user_error(result, "cls.csv:3", "index 2, expected 1")  # before: exit 1, "internal error"
    (tmp_path / "cls.csv").write_text("index,mid,display_name\n0,/m/a,A\n")
    assert_user_error(run_cli("audio", "stats", "audio/synth_tiny", *overrides, cwd=tmp_path), "m.json", "not valid JSON")
    (tmp_path / "cls.csv").write_bytes(b"index,mid,display_name\n0,/m/a,\xff\xfe\n")
    assert_user_error(run_cli("audio", "stats", "audio/synth_tiny", *overrides, cwd=tmp_path), "cls.csv", "UTF-8")


def test_segment_start_nan_is_a_bad_line_not_a_crash(tmp_path):
    from rwkv_mm.audio.datasets import read_class_labels, read_segments

    (tmp_path / "cls.csv").write_text("index,mid,display_name\n0,/m/a,A\n")
    (tmp_path / "seg.csv").write_text('# header\nabc, nan, 10.0, "/m/a"\n')
    problems = ProblemLog()
    records = read_segments(tmp_path / "seg.csv", read_class_labels(tmp_path / "cls.csv"), {}, problems)
    assert records == [] and problems.summary() == {"bad_line": 1} and "seg.csv:2" in problems.format()


# ----------------------------------------------------------------------------- opus
def test_opus_clips_are_found_by_folder_scans_and_read(tmp_path):
    assert ".opus" in AUDIO_EXTENSIONS
    t = np.arange(SR) / SR
    sf.write(tmp_path / "tone.opus", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR,
             format="OGG", subtype="OPUS")
    assert index_clip_folders([tmp_path]) == {"tone": tmp_path / "tone.opus"}
    wave = load_audio(tmp_path / "tone.opus", SR)
    assert abs(wave.shape[0] - SR) <= 1 and int(torch.fft.rfft(wave).abs().argmax()) in (439, 440, 441)


# ----------------------------------------------------------------------------- config values
@pytest.mark.parametrize("override, key", [
    ("augment.mixup=2", "augment.mixup"),
    ("augment.mixup_on=spectrum", "augment.mixup_on"),
    ("augment.freq_mask=-1", "augment.freq_mask"),
    ("augment.mixup_alpha=nan", "augment.mixup_alpha"),
    ("model.pool=median", "model.pool"),
    ("model.drop_path=1.5", "model.drop_path"),
    ("model.shift_gamma=0.5", "model.shift_gamma"),
    ("model.patch=[0, 8]", "model.patch"),
    ("backbone.n_embd=100", "backbone.n_embd"),
    ("backbone.version=8", "backbone.version"),
    ("features.norm_std=0", "features.norm_std"),
    ("features.window=kaiser", "features.window"),
    ("features.sample_rate=0", "features.sample_rate"),
    ("features.low_freq=9000", "features.low_freq"),
    ("features.frame_length_ms=inf", "features.frame_length_ms"),
    ("features.target_frames=0", "features.target_frames"),
    ("data.min_seconds=-1", "data.min_seconds"),
    ("data.max_train_clips=-5", "data.max_train_clips"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.keep_snapshots=0", "eval.keep_snapshots"),
])
def test_bad_config_values_name_the_dotted_key_and_file(tmp_path, override, key):
    # no data: were the value accepted, the run would stop at once on the missing class list
    result = run_cli("train", "audio/synth_tiny", override, "data.synthetic=null", "data.class_labels=none.csv",
                     cwd=tmp_path)
    assert_user_error(result, "synth_tiny.yaml", key)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_patch_larger_than_the_input_is_refused_with_the_recipe(tmp_path):
    result = run_cli("train", "audio/synth_tiny", "model.patch=[16, 80]", "model.stride=[16, 80]",
                     "data.synthetic=null", "data.class_labels=none.csv", cwd=tmp_path)
    assert_user_error(result, "synth_tiny.yaml", "model.patch=[16, 80]", "features.num_mel_bins=64")
    assert not (tmp_path / "runs").exists()  # before: found only after the run folder was written


def test_audio_load_error_is_a_user_error_with_a_reason(tmp_path):
    write(tmp_path / "x.wav", with_bad_sample(math.nan))
    with pytest.raises(AudioLoadError) as info:
        load_audio(tmp_path / "x.wav", SR)
    assert isinstance(info.value, UserError) and info.value.reason == "non_finite"
    assert str(tmp_path / "x.wav") in str(info.value)
