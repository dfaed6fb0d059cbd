"""What is trusted and what is not: YAML is safe-loaded (no tag runs code), saved files keep the
user's umask, and an interrupted or failed write leaves the previous file whole."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from rwkv_mm.backbone.files import atomic_write, temp_files_of
from rwkv_mm.errors import DiskFullError
from robustness.cli_utils import assert_user_error, run_cli


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system"])
def test_yaml_tags_in_a_recipe_run_nothing(tmp_path, tag):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"runner: lm_music\ntrain:\n  lr: {tag} ['touch {marker}']\n")
    assert_user_error(run_cli("train", recipe, "--run-dir", tmp_path / "run", cwd=tmp_path), "evil.yaml")
    assert not marker.exists()


def test_yaml_tag_in_an_override_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    result = run_cli("train", "music/abc_tiny", f"train.lr=!!python/object/apply:os.system ['touch {marker}']",
                     "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_user_error(result, "train.lr")
    assert not marker.exists()


def test_saved_files_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.bin", lambda tmp: open(tmp, "wb").write(b"x"))
        assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone would give 0600
        os.umask(0o077)
        path = atomic_write(tmp_path / "b.bin", lambda tmp: open(tmp, "wb").write(b"x"))
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def _full_disk_writer(tmp: str) -> None:
    with open(tmp, "wb") as f:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_keeps_the_previous_file_and_says_so(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"step": 1}, path)
    with pytest.raises(DiskFullError, match="disk full") as info:
        atomic_write(path, _full_disk_writer)
    assert str(path) in str(info.value)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert temp_files_of(path) == []


def test_disk_full_through_torch_save_is_recognised(tmp_path, monkeypatch):
    """torch's C++ writer reports a full disk as 'basic_ios::clear: iostream error'."""
    path = tmp_path / "last.pt"
    torch.save({"step": 1}, path)

    def save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0: "
                           "basic_ios::clear: iostream error")

    with pytest.raises(DiskFullError):
        atomic_write(path, lambda tmp: save({}, tmp))
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert temp_files_of(path) == []
