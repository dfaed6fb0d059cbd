"""Shared constants have one home that imports nothing; every figure is saved by save_figure."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rwkv_mm.backbone import TEMP_SUFFIX
from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.figures import pyplot, save_figure

REPO = Path(__file__).resolve().parents[1]


def test_ignore_index_is_defined_once_and_shared():
    from rwkv_mm.music import corpus, positions
    from rwkv_mm.training import trainer
    from rwkv_mm.vision import conversation, data

    assert IGNORE_INDEX == -100
    for module in (corpus, positions, conversation, data, trainer):  # `is`: imported, not redefined
        assert module.IGNORE_INDEX is IGNORE_INDEX, module.__name__


def test_front_ends_import_the_constants_without_training_or_recipe_code():
    code = ("import sys; import rwkv_mm.constants, rwkv_mm.music.corpus, rwkv_mm.music.positions, "
            "rwkv_mm.vision.conversation; "
            "print(sorted(m for m in sys.modules if m.startswith(('rwkv_mm.training', 'rwkv_mm.recipe'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_saves_a_figure_itself():
    callers = []
    for folder in ("rwkv_mm", "backbone", "cuda"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in ("savefig", "use"):
                    callers.append(path.relative_to(REPO).as_posix())
    assert sorted(set(callers)) == ["rwkv_mm/figures.py"]


def test_save_figure_is_atomic_makes_the_folder_and_closes(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "new" / "curve.png", dpi=40)
    assert out == tmp_path / "new" / "curve.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert list(tmp_path.rglob("*" + TEMP_SUFFIX)) == []


def test_save_figure_closes_the_figure_when_the_write_fails(tmp_path):
    plt = pyplot()
    fig, _ = plt.subplots()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError):
        save_figure(fig, tmp_path / "file" / "x.png")
    assert not plt.fignum_exists(fig.number)


def test_every_plot_writes_through_save_figure(tmp_path):
    from rwkv_mm.audio.plot import plot_tagging
    from rwkv_mm.music.positions import plot_position_curves
    from rwkv_mm.training.plot import plot_metrics
    from rwkv_mm.vision.evaluate import plot_pope

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    outs = [plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "loss.png"),
            plot_tagging([0.5, 0.25], ["a", "b"], tmp_path / "ap.png", history=[(1, 0.3), (2, 0.4)]),
            plot_position_curves({"step 1": np.linspace(3, 1, 20)}, tmp_path / "sub" / "positions.png")]
    plot_pope({"random": dict(accuracy=0.9, precision=0.8, recall=0.7, f1=0.75, yes_ratio=0.5)},
              tmp_path / "pope.png")
    outs.append(tmp_path / "pope.png")
    for out in outs:
        assert out.read_bytes()[:4] == b"\x89PNG", out
    assert pyplot().get_fignums() == []
    assert list(tmp_path.rglob("*" + TEMP_SUFFIX)) == []
