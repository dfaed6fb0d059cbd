"""A non-editable install (`pip install .`): the wheel holds every subpackage and every shipped
file, and the quickstart's first part runs from it in another working folder, writing only there.

The wheel is built from a copy of the checkout (its tracked and new files) and unpacked onto
PYTHONPATH of a child process, ahead of the editable install (whose finder comes after the
path finder), so the child imports the installed copy; the test checks that it does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from robustness.cli_utils import tree_snapshot

REPO = Path(__file__).resolve().parents[1]
MUSIC = ["backbone.n_layer=1", "backbone.n_embd=32", "backbone.head_size=16", "data.ctx_len=64", "data.max_train_tunes=32",
         "data.max_validation_tunes=4", "train.max_steps=2", "train.batch_size=4", "train.eval_every=2",
         "train.eval_batches=1", "train.save_every=2", "generate.n_tunes=1", "generate.max_bytes=40"]


def _source_copy(dest: Path) -> Path:
    """The checkout's tracked and new (not ignored) files, copied to `dest`."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(src)], check=True, capture_output=True)
    (found,) = out.glob("rwkv_mm-*.whl")
    return found


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(folder)
    return folder


def _expected_files() -> set[str]:
    """What the wheel must hold: an `__init__.py` per package below every mapped source folder,
    native sources, recipes, the bundled corpus (paths as installed)."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    expected = set()
    for name, folder in mapping.items():
        root = REPO / folder
        prefix = name.replace(".", "/")
        for path in root.rglob("*"):
            rel = path.relative_to(root)
            if "__pycache__" in rel.parts or not path.is_file():
                continue
            if path.name == "__init__.py" or path.suffix in (".c", ".cu", ".cpp", ".h", ".yaml") \
                    or (name == "rwkv_mm.data.music" and path.suffix == ".json"):
                expected.add(f"{prefix}/{rel.as_posix()}")
    return expected


def test_the_wheel_holds_every_subpackage_and_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected_files() - names)
    assert not missing, f"not in the wheel: {missing}"
    for must in ("rwkv_mm/backbone/__init__.py", "rwkv_mm/kernels/wkv_cuda.cu", "rwkv_mm/audio/fbank_native.c",
                 "rwkv_mm/recipes/music/abc_tiny.yaml", "rwkv_mm/data/music/train.json",
                 "rwkv_mm/music/modality.py", "rwkv_mm/vision/cli.py"):
        assert must in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "data/", "backbone/", "cuda/"))]


@pytest.mark.slow
def test_the_quickstart_runs_from_a_non_editable_install_in_another_folder(site, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import rwkv_mm, rwkv_mm.backbone, rwkv_mm.shipped as s; "
                            "print(rwkv_mm.__file__, rwkv_mm.backbone.__file__, s.shipped_root())"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # not the editable checkout
    before = tree_snapshot(site)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([sys.executable, "-m", "rwkv_mm.cli", "quickstart", "--only", "music", *MUSIC],
                            env=env, cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((work / "runs" / "quickstart" / "quickstart_summary.json").read_text())
    (part,) = record["parts"]
    assert part["recipe"] == "music/abc_tiny" and record["complete"]
    assert (work / "runs" / "quickstart" / "abc_tiny" / "model.pth").is_file()
    assert {p.name for p in work.iterdir()} == {"runs"}  # everything under the working folder's runs/
    assert tree_snapshot(site) == before  # nothing written into the installed package
