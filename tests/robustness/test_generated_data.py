"""Issue 13, item 1: builders of generated data (the synthetic audio and visual sets) never remove
what they did not write (rwkv_mm.generated).

Before: `rwkv-mm audio synth --out victim` removed `victim/` (and a folder `victim.tmp/`) whole,
also through a recipe's `data.synthetic.out`; the visual builder removed `root/images/*.png`.
Now a non-empty folder without the builder's marker is refused (exit 2, the folder named, nothing
touched), and a rebuild of its own folder removes only the files its marker lists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustness.cli_utils import assert_user_error, run_cli, tree_snapshot
from rwkv_mm import generated
from rwkv_mm.audio import synth
from rwkv_mm.audio.synth import SynthConfig, build_synth
from rwkv_mm.errors import UserError
from rwkv_mm.generated import MARKER, build_generated, read_marker
from rwkv_mm.vision.synth import build_synthetic_visual

SMALL = ["--n-train", "2", "--n-eval", "1", "--clip-seconds", "0.2"]


def small(out: Path, **kw) -> SynthConfig:
    return SynthConfig(out=str(out), **{"n_train": 2, "n_eval": 1, "clip_seconds": 0.2, **kw})


def victim(tmp_path: Path) -> Path:
    """A user's folder with a file in it, and a user's folder named like the old temp folder."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work\n")
    (tmp_path / "victim.tmp").mkdir()
    (tmp_path / "victim.tmp" / "notes.txt").write_text("more work\n")
    return folder


def test_audio_synth_refuses_a_users_folder(tmp_path):
    folder = victim(tmp_path)
    before = tree_snapshot(tmp_path)
    result = run_cli("audio", "synth", "--out", folder, *SMALL)
    assert_user_error(result, str(folder), "--out", MARKER)
    assert tree_snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim", "victim.tmp"]  # no temp folder left


def test_audio_synth_recipe_out_refuses_a_users_folder(tmp_path):
    folder = victim(tmp_path)
    before = tree_snapshot(tmp_path)
    result = run_cli("train", "audio/synth_tiny", f"data.synthetic.out={folder}", "data.synthetic.n_train=2",
                     "data.synthetic.n_eval=1", "data.synthetic.clip_seconds=0.2",
                     "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_user_error(result, str(folder), "data.synthetic.out")
    after = {k: v for k, v in tree_snapshot(tmp_path).items() if not k.startswith("run/")}
    assert after == before


def test_visual_builder_refuses_a_users_folder(tmp_path):
    root = tmp_path / "pictures"
    (root / "images").mkdir(parents=True)
    (root / "images" / "holiday.png").write_bytes(b"\x89PNG a user's picture")
    before = tree_snapshot(tmp_path)
    with pytest.raises(UserError, match="pictures.*data.synthetic_root"):
        build_synthetic_visual(root, n_train=2, n_eval=1)
    assert tree_snapshot(tmp_path) == before
    result = run_cli("train", "visual/stage1_tiny", f"data.synthetic_root={root}", "--run-dir", tmp_path / "run",
                     cwd=tmp_path)
    assert_user_error(result, str(root), "data.synthetic_root")
    assert (root / "images" / "holiday.png").exists()


def test_empty_folder_is_used_and_rebuild_removes_only_listed_files(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    build_synth(small(out, n_train=3))
    listed = set(read_marker(out)["files"])
    assert "clips/tr000002.wav" in listed and "synth_info.json" in listed
    (out / "mine.txt").write_text("a user's note\n")
    (out / "clips" / "my_clip.wav").write_bytes(b"user audio")
    build_synth(small(out, n_train=2))  # changed settings: rebuilt in place
    assert (out / "mine.txt").read_text() == "a user's note\n"
    assert (out / "clips" / "my_clip.wav").read_bytes() == b"user audio"
    assert not (out / "clips" / "tr000002.wav").exists()  # listed by the old marker, not in the new set
    assert json.loads((out / "synth_info.json").read_text())["n_train"] == 2
    assert "mine.txt" not in read_marker(out)["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_rebuild_never_overwrites_a_file_it_did_not_write(tmp_path):
    out = tmp_path / "set"
    build_synth(small(out))
    (out / "clips" / "tr000002.wav").write_bytes(b"user audio with our name")
    before = tree_snapshot(tmp_path)
    with pytest.raises(UserError, match="tr000002.wav"):
        build_synth(small(out, n_train=3))
    assert tree_snapshot(tmp_path) == before


def test_visual_rebuild_keeps_a_users_extra_image(tmp_path):
    root = tmp_path / "visual"
    build_synthetic_visual(root, n_train=3, n_eval=1)
    (root / "images" / "holiday.png").write_bytes(b"\x89PNG a user's picture")
    assert build_synthetic_visual(root, n_train=3, n_eval=1) == root  # same settings: skipped
    build_synthetic_visual(root, n_train=2, n_eval=1)
    assert (root / "images" / "holiday.png").exists()
    assert sorted(p.name for p in (root / "images").iterdir()) == ["eval_00002.png", "holiday.png",
                                                                  "train_00000.png", "train_00001.png"]


@pytest.mark.parametrize("entry", ["../outside.txt", "/etc/hostname", "a/../../outside.txt"])
def test_a_marker_pointing_outside_is_not_trusted(tmp_path, entry):
    out = tmp_path / "set"
    out.mkdir()
    (tmp_path / "outside.txt").write_text("keep\n")
    (out / "thesis.txt").write_text("keep\n")
    (out / MARKER).write_text(json.dumps({"generator": "x", "files": [entry, "thesis.txt"], "dirs": []}))
    before = tree_snapshot(tmp_path)
    with pytest.raises(UserError, match="no valid"):
        build_synth(small(out))
    assert tree_snapshot(tmp_path) == before


def test_removal_does_not_follow_a_symlinked_folder(tmp_path):
    out = tmp_path / "set"
    build_synth(small(out, n_train=3))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("tr000000.wav", "tr000001.wav", "tr000002.wav"):
        (photos / name).write_text("a user's file\n")
    os.rename(out / "clips", tmp_path / "old_clips")
    (out / "clips").symlink_to(photos)  # the listed folder now leads elsewhere
    before = tree_snapshot(photos)
    with pytest.raises(UserError, match="clips"):
        build_synth(small(out, n_train=2))
    assert tree_snapshot(photos) == before


def test_a_failed_build_leaves_no_temp_folder_and_no_set(tmp_path, monkeypatch):
    def boom(*_):
        raise RuntimeError("disk on fire (test)")

    monkeypatch.setattr(synth, "synth_clip", boom)
    with pytest.raises(RuntimeError):
        build_synth(small(tmp_path / "set"))
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_rebuild_does_not_look_complete_and_recovers(tmp_path, monkeypatch):
    out = tmp_path / "set"
    build_synth(small(out, n_train=3))
    (out / "mine.txt").write_text("keep\n")
    moved = []
    real_replace = os.replace

    def replace_then_die(src, dst):
        if Path(dst).parent == out / "clips" and len(moved) >= 2:
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of publishing
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(generated.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_synth(small(out, n_train=4))
    monkeypatch.setattr(generated.os, "replace", real_replace)
    assert not (out / "synth_info.json").exists()  # not mistaken for a complete set
    build_synth(small(out, n_train=4))
    assert json.loads((out / "synth_info.json").read_text())["n_train"] == 4
    assert (out / "mine.txt").read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_temp_folder_of_a_killed_build_is_cleaned_and_a_users_is_not(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / ".set.abc123.partial"
    stale.mkdir()
    (stale / "half.wav").write_bytes(b"half")
    (stale / MARKER).write_text(json.dumps({"generator": "x", "pid": int(dead), "host": os.uname().nodename,
                                            "files": [], "dirs": []}))
    users = tmp_path / ".set.mine.partial"
    users.mkdir()
    (users / "keep.txt").write_text("keep\n")
    build_synth(small(tmp_path / "set"))
    assert not stale.exists() and (users / "keep.txt").exists()


def test_legacy_set_with_same_settings_is_reused_and_otherwise_refused(tmp_path):
    out = tmp_path / "set"
    build_synth(small(out))
    (out / MARKER).unlink()  # as written before the marker existed
    before = tree_snapshot(tmp_path)
    assert build_synth(small(out)) == out
    with pytest.raises(UserError, match="no valid"):
        build_synth(small(out, n_train=3))
    assert tree_snapshot(tmp_path) == before


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "set").write_text("a file\n")
    assert_user_error(run_cli("audio", "synth", "--out", tmp_path / "set", *SMALL), "not a folder", "set")
    with pytest.raises(UserError, match="not a folder"):
        build_generated(tmp_path / "set", lambda folder: None, generator="t", sentinel="done")
    assert tree_snapshot(tmp_path) == {"set": b"a file\n"}


def test_published_folder_keeps_the_umask_permissions(tmp_path):
    out = build_synth(small(tmp_path / "set"))
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask


@pytest.mark.parametrize("key, value", [("n_train", 0), ("n_eval", -1), ("clip_seconds", float("nan")),
                                        ("clip_seconds", 0.0), ("sample_rate", 8000), ("max_events", 11),
                                        ("min_events", 0), ("seed", -1), ("bad_train_clips", "yes")])
def test_synth_config_is_validated(tmp_path, key, value):
    with pytest.raises(UserError, match=f"{key}="):
        SynthConfig(out=str(tmp_path / "s"), **{key: value})


def test_bad_synth_settings_are_named_on_the_command_line_and_in_recipes(tmp_path):
    assert_user_error(run_cli("audio", "synth", "--out", tmp_path / "s", "--n-train", "0"), "n_train")
    result = run_cli("train", "audio/synth_tiny", "data.synthetic.clip_seconds=.nan", "--run-dir", tmp_path / "run",
                     cwd=tmp_path)
    # ideally "data.synthetic.clip_seconds=nan"; the recipe reader's Optional branch still words it as
    # "data.synthetic: expected SynthConfig | None, got {... 'clip_seconds': nan ...}"
    assert_user_error(result, "data.synthetic", "clip_seconds", "synth_tiny")
    assert not (tmp_path / "runs").exists()
