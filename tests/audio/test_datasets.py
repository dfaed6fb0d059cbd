"""AudioSet CSVs and AST manifests: parsing, clip lookup, bad clips counted and skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from rwkv_mm.audio.datasets import (AudioTaggingDataset, ProblemLog, collate_clips, index_clip_folders,
                                    read_class_labels, read_clip_list, read_manifest, read_segments)
from rwkv_mm.audio.io import load_audio
from rwkv_mm.errors import UserError

CLASSES = 'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n2,/m/04rlf,Music\n'


@pytest.fixture
def audioset(tmp_path):
    (tmp_path / "class_labels_indices.csv").write_text(CLASSES)
    clips = tmp_path / "audio"
    clips.mkdir()
    rng = np.random.default_rng(0)
    sr = 16000
    sf.write(clips / "aaaaaaaaaaa.wav", 0.1 * rng.standard_normal(sr), sr)
    sf.write(clips / "Ybbbbbbbbbbb.flac", 0.1 * rng.standard_normal(2 * sr), sr)  # 'Y' prefix, flac
    sf.write(clips / "ccccccccccc_30000.ogg", 0.1 * rng.standard_normal(sr), sr)  # <ytid>_<start ms>
    sf.write(clips / "silent00000.wav", np.zeros(sr), sr)
    sf.write(clips / "short000000.wav", 0.1 * np.ones(100), sr)
    (clips / "corrupt0000.wav").write_bytes(b"RIFF....WAVE garbage")
    (tmp_path / "segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=9, num_segs=9, num_unique_labels=3, num_positive_labels=12\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        'aaaaaaaaaaa, 0.000, 10.000, "/m/09x0r,/m/05zppz"\n'
        'bbbbbbbbbbb, 10.000, 20.000, "/m/04rlf"\n'
        'ccccccccccc, 30.000, 40.000, "/m/04rlf,/m/unknown"\n'
        'ddddddddddd, 0.000, 10.000, "/m/04rlf"\n'
        'eeeeeeeeeee, 0.000, 10.000, "/m/unknown"\n'
        'silent00000, 0.000, 10.000, "/m/09x0r"\n'
        'short000000, 0.000, 10.000, "/m/09x0r"\n'
        'corrupt0000, 0.000, 10.000, "/m/09x0r"\n'
        'broken line without labels\n')
    return tmp_path


def test_class_list_with_quoted_commas(audioset):
    classes = read_class_labels(audioset / "class_labels_indices.csv")
    assert classes.mids == ["/m/09x0r", "/m/05zppz", "/m/04rlf"]
    assert classes.names[1] == "Male speech, man speaking" and len(classes) == 3


def test_class_list_errors_name_file_and_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("index,mid,display_name\n0,/m/a,A\n2,/m/b,B\n")
    with pytest.raises(UserError, match=r"index 2, expected 1, .*c.csv:3"):
        read_class_labels(path)
    path.write_text("id,mid\n")
    with pytest.raises(UserError, match=r"expected the header.*, .*c.csv:1"):
        read_class_labels(path)


def test_segments_find_clips_and_count_problems(audioset):
    classes = read_class_labels(audioset / "class_labels_indices.csv")
    problems = ProblemLog()
    records = read_segments(audioset / "segments.csv", classes, index_clip_folders([audioset / "audio"]), problems)
    assert [r.key for r in records] == ["aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc", "silent00000",
                                        "short000000", "corrupt0000"]
    assert records[0].labels == [0, 1] and records[2].labels == [2]
    assert records[1].path.name == "Ybbbbbbbbbbb.flac" and records[2].path.name == "ccccccccccc_30000.ogg"
    assert problems.summary() == {"bad_line": 1, "unknown_label": 2, "no_labels": 1, "missing": 1}
    assert "segments.csv:7" in problems.format()  # ddddddddddd: missing, named by file and line


def test_dataset_skips_bad_clips_counts_them_and_never_crashes(audioset):
    classes = read_class_labels(audioset / "class_labels_indices.csv")
    problems = ProblemLog()
    records = read_clip_list(audioset / "segments.csv", classes, [audioset / "audio"], problems)
    ds = AudioTaggingDataset(records, len(classes), clip_samples=24000, problems=problems)
    assert [ds.load(i) is None for i in range(len(ds))] == [False, False, False, True, True, True]
    assert problems.counts["silent"] == 1 and problems.counts["too_short"] == 1 and problems.counts["unreadable"] == 1
    sample = ds[3]  # bad → the next good clip (wrapping around)
    assert sample["index"] == 0
    assert sample["wave"].shape == (24000,) and sample["length"] == 16000
    assert torch.equal(sample["target"], torch.tensor([1.0, 1.0, 0.0]))
    batch = collate_clips([ds[0], ds[1]])
    assert batch["wave"].shape == (2, 24000) and batch["targets"].shape == (2, 3)
    assert batch["lengths"].tolist() == [16000, 24000]  # the 2 s clip is cropped to 1.5 s
    assert problems.n_bad_clips == 1 + 1 + 1 + 1 + 1 + 1  # bad_line, no_labels, missing, silent, short, corrupt
    assert ds.targets().sum(0).tolist() == [4, 1, 2]


def test_all_bad_is_an_error_with_the_report(audioset):
    classes = read_class_labels(audioset / "class_labels_indices.csv")
    problems = ProblemLog()
    records = [r for r in read_clip_list(audioset / "segments.csv", classes, [audioset / "audio"], problems)
               if r.key.startswith(("silent", "short", "corrupt"))]
    ds = AudioTaggingDataset(records, 3, 16000, problems=problems)
    with pytest.raises(UserError, match="no readable clip.*\n.*silent"):
        ds[0]


def test_manifest_relative_paths_and_label_lists(audioset):
    classes = read_class_labels(audioset / "class_labels_indices.csv")
    (audioset / "m.json").write_text(json.dumps({"data": [
        {"wav": "audio/aaaaaaaaaaa.wav", "labels": "/m/09x0r,/m/04rlf"},
        {"wav": str(audioset / "audio" / "Ybbbbbbbbbbb.flac"), "labels": ["/m/05zppz"]},
        {"wav": "audio/nope.wav", "labels": "/m/09x0r"},
        {"labels": "/m/09x0r"},
    ]}))
    problems = ProblemLog()
    records = read_manifest(audioset / "m.json", classes, problems)
    assert [r.labels for r in records] == [[0, 2], [1]]
    assert problems.summary() == {"bad_line": 1, "missing": 1}


def test_load_audio_downmixes_and_resamples(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, sr)
    wave = load_audio(tmp_path / "s.wav", 16000)
    assert wave.dtype == torch.float32 and abs(wave.shape[0] - 16000) <= 1
    spectrum = torch.fft.rfft(wave).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 Hz bins: the tone survives at 440 Hz
