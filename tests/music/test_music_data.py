"""ABC music data: byte tokenizer, IrishMAN JSON / .abc reading, packing, scoring, bundled corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rwkv_mm.music.corpus import TuneDataset, collate_tunes, load_tunes, split_abc_file
from rwkv_mm.music.scoring import parse_rate, parse_tune, with_header
from rwkv_mm.music.tokenizer import ByteTokenizer

TUNE = ("X:7\nT:Test reel\nM:4/4\nL:1/8\nK:G\n|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|\n"
        "GABc dedB|dedB dedB|c2ec B2dB|A2F2 G4:|\n")
ROOT = Path(__file__).resolve().parents[2]


def test_byte_tokenizer_ids_and_round_trip():
    tok = ByteTokenizer()
    assert tok.vocab_size == 128 and (tok.pad_id, tok.begin_id, tok.end_id) == (0, 2, 3)
    ids = tok.encode_tune("K:G\n|GABc|")
    assert ids[0] == 2 and ids[-1] == 3 and ids[1:-1] == list(b"K:G\n|GABc|")
    assert tok.decode(ids) == "K:G\n|GABc|"
    assert all(3 < i < 128 for i in tok.encode(TUNE))


def test_non_ascii_policy_is_counted():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("T:Café Straße “x”\x01中")) == 'T:Cafe Strasse "x"'
    assert tok.stats.replaced == 4 and tok.stats.dropped == 2  # é ß “ ” replaced; \x01 中 dropped


def test_irishman_json_drops_x_line_and_prepends_control_code(tmp_path):
    items = [{"control code": "S:2\nB:8\nE:5\nB:8\n", "abc notation": TUNE},
             {"control code": "S:1\n", "abc notation": "X:1\nT:empty\n"},
             {"something": "else"}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(items))
    tunes, report = load_tunes(path)
    assert tunes == ["S:2\nB:8\nE:5\nB:8\n" + TUNE.replace("X:7\n", "")]
    assert report.kept == 1
    assert report.problems == [(str(path), 1, "no K: (key) field"),
                               (str(path), 2, "item has no 'abc notation' string")]
    with pytest.raises(ValueError, match=r"train.json: tune 1: no K: \(key\) field"):
        load_tunes(path, strict=True)


def test_multi_tune_abc_files_and_folders(tmp_path):
    text = "% a collection\n" + TUNE + "\n" + TUNE.replace("X:7", "X:8") + "\nX:9\nT:no music\nK:D\n"
    assert len(split_abc_file(text)) == 3
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.abc").write_text(text)
    (tmp_path / "a.abc").write_text(TUNE)
    tunes, report = load_tunes(tmp_path)
    assert len(tunes) == 3 and all(not t.startswith("X:") for t in tunes)
    assert [tuple(p) for p in report.problems] == [(str(tmp_path / "sub" / "b.abc"), 2, "no music after the K: field")]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_tunes(tmp_path / "missing.json")


def test_dataset_and_collate():
    ds = TuneDataset(["K:G\n|GA|", "K:D\n|" + "d" * 50 + "|"], ctx_len=16)
    assert len(ds) == 2
    first = ds[0]
    assert first["input_ids"][0] == 2 and first["targets"][-1] == 3
    assert torch.equal(first["input_ids"][1:], first["targets"][:-1])
    batch = collate_tunes([ds[0], ds[1]])
    assert batch["input_ids"].shape == batch["targets"].shape == (2, 16)  # the long tune is cut
    assert (batch["targets"][0, len(first["targets"]):] == -100).all()
    assert (batch["input_ids"][0, len(first["input_ids"]):] == 0).all()


def test_parse_tune_counts_bars():
    ok, bars, err = parse_tune("S:2\nB:8\n" + TUNE.replace("X:7\n", ""))
    assert ok and bars == 8 and err is None
    assert with_header("K:G\n|GA|").startswith("X:1\nL:1/8\n")  # music21 needs L: or M:
    assert parse_rate([TUNE, "K:G\n|G|"], min_bars=4) == 0.5


def test_bundled_corpus_loads():
    train, train_report = load_tunes(ROOT / "data/music/train.json")
    valid, _ = load_tunes(ROOT / "data/music/validation.json")
    assert len(train) == 12551 and len(valid) == 244 and not train_report.problems
    assert all(t.isascii() for t in train[:500])
    assert train[0].startswith("S:")
