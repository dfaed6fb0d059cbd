"""Tune corpora: IrishMAN JSON and .abc reading with reported problems, cleaning, packing,
the bundled corpus and the control codes of its build script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rwkv_mm.music.corpus import (IGNORE_INDEX, CorpusError, TuneDataset, clean_abc, collate_tunes,
                                  load_tunes, split_abc_file, strip_x_line, tune_problem)

ROOT = Path(__file__).resolve().parents[2]
TUNE = ("X:7\nT:Test reel\nM:4/4\nL:1/8\nK:G\n|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|\n"
        "GABc dedB|dedB dedB|c2ec B2dB|A2F2 G4:|\n")


def _build_script():
    spec = importlib.util.spec_from_file_location("build_music_corpus", ROOT / "data/build_music_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_irishman_json_drops_x_line_and_prepends_control_code(tmp_path):
    items = [{"control code": "S:2\nB:8\nE:5\nB:8\n", "abc notation": TUNE},
             {"control code": "S:1\nB:4", "abc notation": "X:1\nL:1/8\nK:D\n|DEFG|ABcd|\n"},
             {"control code": "S:1\n", "abc notation": "X:1\nT:empty\n"},
             {"something": "else"},
             {"control code": 3, "abc notation": TUNE},
             {"control code": "", "abc notation": "X:1\n\n"}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(items))
    tunes, report = load_tunes(path)
    assert tunes == ["S:2\nB:8\nE:5\nB:8\n" + TUNE.replace("X:7\n", ""),
                     "S:1\nB:4\nL:1/8\nK:D\n|DEFG|ABcd|\n"]  # a newline ends the control code
    assert (report.read, report.kept, report.files) == (6, 2, [str(path)])
    assert report.problems == [(str(path), 2, "no K: (key) field"),
                               (str(path), 3, "item has no 'abc notation' string"),
                               (str(path), 4, "'control code' is not a string"),
                               (str(path), 5, "empty tune")]
    assert report.problems[0].index == 2 and report.reasons()["empty tune"] == 1
    assert "6 tunes read" in report.summary() and "4 left out" in report.summary()
    with pytest.raises(CorpusError, match=r"train.json: tune 2: no K: \(key\) field"):
        load_tunes(path, strict=True)


def test_malformed_json_files_raise(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorpusError, match="bad.json: not valid JSON"):
        load_tunes(bad)
    bad.write_text('{"abc notation": "X:1"}')
    with pytest.raises(CorpusError, match="expected a JSON list"):
        load_tunes(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tunes(tmp_path / "missing.json")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CorpusError, match="no .abc files"):
        load_tunes(tmp_path / "empty_dir")


def test_multi_tune_abc_files_and_folders(tmp_path):
    text = ("% a collection\nL:1/8\n\n" + TUNE + "\n\n" + TUNE.replace("X:7", "X:8")
            + "\nX:9\nT:no music\nK:D\n\nX:10\nK:D\nDEFG ABcd\n\nX:11\n\n")
    parts = split_abc_file(text)
    assert len(parts) == 5 and parts[0] == TUNE and all(p.startswith("X:") for p in parts)
    assert split_abc_file("L:1/8\nK:G\n|GA|\n") == ["L:1/8\nK:G\n|GA|\n"]  # no X: line: one tune
    assert split_abc_file("% only a comment\n") == []
    assert split_abc_file(TUNE.replace("\n", "\r\n")) == [TUNE]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.abc").write_text(text)
    (tmp_path / "a.abc").write_text(TUNE)
    (tmp_path / "ignored.json").write_text("[]")
    tunes, report = load_tunes(tmp_path)
    assert len(tunes) == 3 and all(not t.startswith("X:") for t in tunes)
    assert tunes[0] == strip_x_line(TUNE)
    b = str(tmp_path / "sub" / "b.abc")
    assert report.files == [str(tmp_path / "a.abc"), b]
    assert report.problems == [(b, 2, "no music after the K: field"), (b, 3, "no bar lines"),
                               (b, 4, "empty tune")]
    with pytest.raises(CorpusError, match=r"b.abc: tune 2: no music after the K: field"):
        load_tunes(tmp_path, strict=True)
    one, report = load_tunes(tmp_path / "a.abc", strict=True)
    assert one == [strip_x_line(TUNE)] and report.kept == 1


def test_non_utf8_file_is_read_and_noted(tmp_path):
    path = tmp_path / "latin1.abc"
    path.write_bytes(TUNE.replace("Test reel", "Caf\xe9").encode("latin-1"))
    tunes, report = load_tunes(path)
    assert "T:Caf\xe9" in tunes[0] and report.notes == [f"{path}: not UTF-8, read as Latin-1"]


def test_tune_problem_and_clean_abc():
    assert tune_problem(TUNE) is None
    assert tune_problem("X:1\n% just a comment\n") == "empty tune"
    tune = ("X:3\nT:Title\nR:reel\nM: 6/8\nL:1/8\nQ:3/8=120\nN:a note\nK: D\n"
            "% comment line\nd:|ABc def|\"D\"fed cBA % trailing comment\n"
            "w: la la la\nM:9/8\nABc def gfe|\n%%MIDI program 1\n")
    assert clean_abc(tune) == "L:1/8\nM:6/8\nK:D\nd:|ABc def|\"D\"fed cBA\nM:9/8\nABc def gfe|\n"
    assert clean_abc(tune, keep_fields="LMKQ").startswith("L:1/8\nM:6/8\nQ:3/8=120\nK:D\n")


def test_dataset_and_collate():
    ds = TuneDataset(["K:G\n|GA|", "K:D\n|" + "d" * 50 + "|"], ctx_len=16)
    assert len(ds) == 2 and ds.n_truncated == 1
    first = ds[0]
    assert first["input_ids"].tolist() == [2, *b"K:G\n|GA|"]
    assert first["targets"].tolist() == [*b"K:G\n|GA|", 3]
    assert len(ds[1]["input_ids"]) == 16 and ds[1]["targets"][-1] != 3  # cut: no end token
    batch = collate_tunes([ds[0], ds[1]])
    assert batch["input_ids"].shape == batch["targets"].shape == (2, 16)
    assert batch["input_ids"].dtype == batch["targets"].dtype == torch.long
    n = len(first["targets"])
    assert (batch["targets"][0, n:] == IGNORE_INDEX).all() and (batch["targets"][0, :n] >= 0).all()
    assert (batch["input_ids"][0, n:] == 0).all()
    assert torch.equal(batch["input_ids"][1, 1:], batch["targets"][1, :-1])
    again = TuneDataset(["K:G\n|GA|", "K:D\n|" + "d" * 50 + "|"], ctx_len=16)
    assert all(torch.equal(a, b) for a, b in zip(ds.samples, again.samples))  # deterministic
    assert TuneDataset(["Caf\xe9\x01"], ctx_len=8).tokenizer_stats.dropped == 1
    with pytest.raises(ValueError):
        TuneDataset(["x"], ctx_len=0)
    with pytest.raises(ValueError):
        collate_tunes([])


def test_control_codes_of_the_build_script():
    build = _build_script()
    assert build.levenshtein("kitten", "sitting") == 3 and build.levenshtein("", "abc") == 3
    assert build.edit_similarity("abcd", "abcd") == 10 and build.edit_similarity("abcd", "wxyz") == 0
    aabb = ("L:1/8\nM:4/4\nK:G\n|:GABc dedB|dedB dedB|c2ec B2dB|A2F2 G4:|\n"
            "|:g2gf gdBd|g2f2 e2d2|c2ec B2dB|1A2F2 G4:|2A2F2 G2z2|]\n")
    assert build.control_codes(aabb) == "S:2\nB:4\nE:4\nB:5\n"  # the second ending stays in B
    aba = "L:1/8\nK:C\nCDEF|GABc||cBAG|FEDC||CDEF|GABc|]\n"  # A B A: E lists earlier sections first
    assert build.control_codes(aba) == "S:3\nB:2\nE:1\nB:2\nE:10\nE:1\nB:2\n"
    assert build.control_codes("L:1/8\nK:C\nCDEF GABc\n") == "S:1\nB:1\n"
    assert build.undo_quoted_printable("AB|=20\nc=3DB|\n") == ("AB|\nc=B|\n", 2)


#: printed by `data/build_music_corpus.py --out data/music` (music21 10.5.1): 12,949 tunes read,
#: 12,551 train + 244 validation kept, 85 duplicates and 69 tunes without bar lines dropped.
N_TRAIN, N_VALIDATION = 12551, 244


def test_bundled_corpus_loads():
    train_path, valid_path = ROOT / "data/music/train.json", ROOT / "data/music/validation.json"
    assert train_path.stat().st_size < 10e6 and valid_path.stat().st_size < 1e6
    train, train_report = load_tunes(train_path)
    valid, valid_report = load_tunes(valid_path)
    assert (len(train), len(valid)) == (N_TRAIN, N_VALIDATION)
    assert not train_report.problems and not valid_report.problems
    assert all(t.isascii() and t.startswith("S:") and "\nK:" in t and "X:" not in t for t in train + valid)
    assert not set(train) & set(valid)
