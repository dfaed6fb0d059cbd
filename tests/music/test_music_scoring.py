"""Scoring generated tunes with music21: header helpers, bar counts, parse rate, .abc/.mid files."""

from __future__ import annotations

import pytest

from rwkv_mm.music.scoring import (ensure_x_line, parse_rate, parse_tune, strip_control_codes,
                                   with_header, write_abc_and_midi)

pytest.importorskip("music21")

BODY = ("M:4/4\nL:1/8\nK:G\n|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|\n"
        "GABc dedB|dedB dedB|c2ec B2dB|A2F2 G4:|\n")  # 8 bars
TUNE = "X:7\nT:Test reel\n" + BODY


def test_header_helpers():
    assert ensure_x_line("K:G\n|GA|\n") == "X:1\nK:G\n|GA|\n"
    assert ensure_x_line(TUNE) == TUNE
    assert strip_control_codes("S:2\nB:8\nE:5\nB:8\nL:1/8\nK:G\n") == "L:1/8\nK:G\n"
    assert strip_control_codes("S:Source text\nK:G\n") == "S:Source text\nK:G\n"  # an ABC field
    assert with_header("S:1\nB:4\nK:G\n|GA|") == "X:1\nL:1/8\nK:G\n|GA|\n"  # no L:/M: → L:1/8
    assert with_header("M:6/8\nK:D\n|ABc|\n") == "X:1\nM:6/8\nK:D\n|ABc|\n"  # meter gives the length
    assert with_header(TUNE) == TUNE


def test_parse_tune_counts_bars():
    assert parse_tune(TUNE) == (True, 8, None)
    assert parse_tune("S:2\nB:4\nE:10\nB:4\n" + BODY) == (True, 8, None)  # IrishMAN text, no X:
    assert parse_tune("K:D\n|DEFG|ABcd|") == (True, 2, None)  # no L:/M: → L:1/8 added


def test_parse_tune_on_garbage():
    ok, bars, err = parse_tune("X:1\nM:4/4\nK:G\n|:GA&&Bc [[[ ded))B|\n")
    assert not ok and bars == 0 and "chord" in err
    ok, bars, err = parse_tune("X:1\nL:1/8\nK:G\n")
    assert (ok, bars, err) == (False, 0, "no notes")
    # music21 is lenient: prose reads as notes without bar lines, i.e. one bar
    assert parse_tune("hello world, this is not music") == (True, 1, None)
    assert parse_tune("K:G\n|G|") == (True, 1, None)


def test_parse_rate():
    assert parse_rate([TUNE, "K:G\n|G|", "[[[garbage", "just some words"], min_bars=4) == 0.25
    assert parse_rate([TUNE, "K:G\n|G|"], min_bars=1) == 1.0
    assert parse_rate([]) != parse_rate([])  # nan


def test_several_tunes_in_one_text_use_the_first():
    assert parse_tune(TUNE + "\nX:8\nL:1/8\nK:D\n|DEFG|\n") == (True, 8, None)


def test_write_abc_and_midi(tmp_path):
    abc, mid = write_abc_and_midi("S:2\nB:4\n" + BODY, tmp_path / "out" / "tune_000")
    assert abc == tmp_path / "out" / "tune_000.abc" and abc.read_text() == "X:1\n" + BODY
    assert mid == tmp_path / "out" / "tune_000.mid" and mid.read_bytes()[:4] == b"MThd"
    abc, mid = write_abc_and_midi("[[[ not abc", tmp_path / "bad.v1")
    assert abc.name == "bad.v1.abc" and abc.exists() and mid is None
