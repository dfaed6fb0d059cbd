"""Bad music inputs: corpora with no tune (empty, binary, invalid JSON, folders of bad files)
name the file instead of a NaN loss with exit 0, and music config values outside their range
name the dotted key and the recipe file before any training starts."""

from __future__ import annotations

import json

import pytest

from rwkv_mm.backbone import save_model
from rwkv_mm.music.corpus import CorpusError, load_tunes
from robustness.cli_utils import assert_user_error, run_cli
from rwkv_test_utils import tiny_model

TUNE = "X:1\nT:Test\nL:1/8\nM:4/4\nK:G\n|GABc dedB|\n"
BINARY = bytes(range(256)) * 8


@pytest.fixture(scope="module")
def music_ckpt(tmp_path_factory):
    model = tiny_model(version="5", n_layer=1, n_embd=32, head_size=16, vocab_size=128)
    return save_model(model, tmp_path_factory.mktemp("music") / "model.pth")


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("name, content, culprits", [
    ("empty.abc", "", ["no tunes in", "empty.abc"]),
    ("binary.abc", BINARY, ["no tunes in", "binary.abc", "binary file"]),
    ("binary.json", BINARY, ["no tunes in", "binary.json", "binary file"]),
    ("notes.abc", "T:only a title\n% and a comment\n", ["no tunes in", "notes.abc"]),
    ("nokey.abc", "X:1\nT:t\n|abc|\n", ["nokey.abc", "tune 0", "no K: (key) field"]),
    ("empty.json", "", ["empty.json", "not valid JSON", "line 1 column 1"]),
    ("torn.json", '[{"abc notation": "X:1\\nK:G\\n|ab|"},\n {"abc', ["torn.json", "line 2"]),
    ("list.json", "[]", ["no tunes in", "list.json"]),
    ("items.json", json.dumps([{"title": "x"}, 3]), ["items.json", "tune 1",
                                                   "no 'abc notation' string"]),
    ("object.json", "{}", ["object.json", "expected a JSON list"]),
])
def test_eval_positions_names_a_corpus_without_tunes(music_ckpt, tmp_path, name, content, culprits):
    # before: empty, binary and all-bad files printed "mean loss ... nan nats/byte (0 tunes)"
    # and wrote a plot, exit 0
    _write(tmp_path / name, content)
    result = run_cli("music", "eval-positions", "--checkpoint", music_ckpt, "--tunes", name,
                     "--out", "plot.png", cwd=tmp_path)
    assert_user_error(result, *culprits)
    assert not (tmp_path / "plot.png").exists()


def test_folder_of_bad_files_names_each(tmp_path):
    _write(tmp_path / "set" / "a.abc", BINARY)
    _write(tmp_path / "set" / "b.abc", "X:1\nK:G\n")
    with pytest.raises(CorpusError, match=r"no tunes in .*set.*a\.abc: a binary file.*b\.abc: tune 0: "
                                          r"no music after the K: field"):
        load_tunes(tmp_path / "set")
    _write(tmp_path / "set" / "c.abc", TUNE)  # one good file: the bad ones are reported, not fatal
    tunes, report = load_tunes(tmp_path / "set")
    assert len(tunes) == 1 and report.problems[0].path.endswith("a.abc")
    with pytest.raises(CorpusError, match=r"a\.abc: a binary file"):
        load_tunes(tmp_path / "set", strict=True)


def test_text_encodings_with_a_byte_order_mark(tmp_path):
    # before: a UTF-8 BOM hid the first X: line (kept as tune text) and broke JSON; UTF-16 text
    # was read as Latin-1 garbage with no tune
    abc_bom = _write(tmp_path / "bom.abc", "\ufeff" + TUNE + "\n" + TUNE.replace("X:1", "X:2"))
    tunes, _ = load_tunes(abc_bom)
    assert len(tunes) == 2 and not any("X:" in t for t in tunes)
    json_bom = _write(tmp_path / "bom.json", "\ufeff" + json.dumps([{"abc notation": TUNE}]))
    assert len(load_tunes(json_bom)[0]) == 1
    utf16 = tmp_path / "utf16.abc"
    utf16.write_bytes(TUNE.encode("utf-16"))
    assert load_tunes(utf16)[0] == [TUNE.replace("X:1\n", "")]


# ----------------------------------------------------------------------------- music configs
FAST = ["train.max_steps=1", "data.max_train_tunes=4", "data.max_validation_tunes=2",
        "backbone.n_layer=1", "backbone.n_embd=32", "backbone.head_size=16", "generate.n_tunes=1",
        "generate.max_bytes=8"]


@pytest.mark.parametrize("override, key", [
    ("generate.top_p=2", "generate.top_p"),
    ("generate.top_p=0", "generate.top_p"),
    ("generate.top_k=-1", "generate.top_k"),
    ("generate.temperature=-1", "generate.temperature"),
    ("generate.temperature=.nan", "generate.temperature"),
    ("generate.max_bytes=0", "generate.max_bytes"),
    ("generate.n_tunes=-1", "generate.n_tunes"),
    ("generate.min_bars=-1", "generate.min_bars"),
    ("generate.seed=-3", "generate.seed"),
    ("backbone.n_layer=0", "backbone.n_layer"),
    ("backbone.head_size=6", "backbone.head_size"),
    ("backbone.n_embd=40", "backbone.n_embd"),
    ("backbone.version=9", "backbone.version"),
    ("data.ctx_len=1", "data.ctx_len"),
    ("data.max_train_tunes=-1", "data.max_train_tunes"),
    ("data.train=", "data.train"),
])
def test_music_config_names_key_and_file(tmp_path, override, key):
    # before: accepted; the run trained and then failed at generation (internal error, exit 1),
    # generated nothing (n_tunes, max_bytes) or failed in the backbone without the key or file
    result = run_cli("train", "music/abc_tiny", *FAST, override, "--run-dir", tmp_path / "run",
                     cwd=tmp_path)
    assert_user_error(result, "abc_tiny.yaml", key)
    assert not (tmp_path / "run").exists()
