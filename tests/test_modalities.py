"""Modalities declare themselves (rwkv_mm/<name>/modality.py): the CLI groups, the runners and the
quickstart parts come from the declarations, and a fourth modality is one new package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rwkv_mm
import rwkv_mm.runners as runners
from rwkv_mm import modalities
from rwkv_mm.cli import main
from rwkv_mm.modalities import Modality, QuickstartPart, get_modality, quickstart_parts
from rwkv_mm.recipe import find_recipe


def test_the_shipped_modalities_declare_themselves_in_order():
    found = modalities.modalities()
    assert [m.name for m in found] == ["music", "vision", "audio"]
    assert [m.package for m in found] == ["rwkv_mm.music", "rwkv_mm.vision", "rwkv_mm.audio"]
    assert get_modality("vision").aliases == ("chat", "eval")
    # the quickstart's parts, in the order it always ran them
    assert [p.recipe for p in quickstart_parts()] == ["music/abc_tiny", "visual/stage1_tiny", "visual/stage2_tiny",
                                                      "audio/synth_tiny"]
    for part in quickstart_parts():
        assert find_recipe(part.recipe).is_file() and part.keys


def test_an_unknown_modality_is_a_user_error_listing_the_known_ones():
    from rwkv_mm.errors import UserError

    with pytest.raises(UserError, match="no modality is named 'sound'.*music, vision, audio"):
        get_modality("sound")


def test_building_the_parser_imports_no_heavy_front_end_module():
    code = ("import sys, rwkv_mm.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PIL', 'music21', 'open_clip', "
            "'transformers', 'torchaudio', 'soundfile') or m in ('rwkv_mm.vision.chat', "
            "'rwkv_mm.vision.evaluate', 'rwkv_mm.vision.model', 'rwkv_mm.audio.model', 'rwkv_mm.music.corpus')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- a fourth modality
SKETCH = {
    "__init__.py": '"""Sketch: a fourth modality made of this one package."""\n',
    "modality.py": """
        from rwkv_mm.modalities import Modality, QuickstartPart

        MODALITY = Modality(
            name="sketch", summary="sketches: say hello", cli="rwkv_mm.sketch.cli",
            runners=("rwkv_mm.sketch.runner",),
            quickstart=(QuickstartPart("{recipe}", "Sketch (tiny)", keys=("score",)),),
            order=40)
        """,
    "cli.py": """
        def _hello(args):
            print(f"hello from sketch, {args.name}")
            return 0

        def add_commands(sub):
            h = sub.add_parser("hello", help="say hello")
            h.add_argument("--name", default="world")
            h.set_defaults(func=_hello)
        """,
    "runner.py": """
        from dataclasses import dataclass
        from pathlib import Path

        from rwkv_mm.runners import register_runner

        @dataclass
        class SketchConfig:
            scale: float = 1.0

        @register_runner("sketch_runner", config=SketchConfig, description="tests: a fourth modality")
        def run(cfg: SketchConfig, run_dir: Path, resume: bool) -> dict:
            return {"score": 2 * cfg.scale}
        """,
}


@pytest.fixture()
def sketch(tmp_path, monkeypatch):
    """`rwkv_mm/sketch/` (front end, CLI, runner, quickstart part) in a folder of its own, seen as
    part of rwkv_mm, and its recipe; nothing else is edited."""
    recipe = tmp_path / "sketch_tiny.yaml"
    recipe.write_text("runner: sketch_runner\ndescription: a fourth modality\nscale: 0.25\n")
    package = tmp_path / "ext" / "sketch"
    package.mkdir(parents=True)
    for name, text in SKETCH.items():
        (package / name).write_text(textwrap.dedent(text).replace("{recipe}", str(recipe)))
    monkeypatch.setattr(rwkv_mm, "__path__", [*rwkv_mm.__path__, str(tmp_path / "ext")])
    monkeypatch.setattr(modalities, "_FOUND", None)
    monkeypatch.setattr(runners, "_discovered", False)
    yield recipe
    runners.unregister_runner("sketch_runner")
    for name in [m for m in sys.modules if m == "rwkv_mm.sketch" or m.startswith("rwkv_mm.sketch.")]:
        del sys.modules[name]


def test_a_fourth_modality_is_one_package(sketch, tmp_path, capsys):
    assert [m.name for m in modalities.modalities()] == ["music", "vision", "audio", "sketch"]
    assert main(["sketch", "hello", "--name", "newcomer"]) == 0
    assert "hello from sketch, newcomer" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "sketches: say hello" in capsys.readouterr().out
    assert runners.get_runner("sketch_runner").description == "tests: a fourth modality"
    assert quickstart_parts()[-1] == QuickstartPart(str(sketch), "Sketch (tiny)", keys=("score",))

    out = tmp_path / "qs"
    assert main(["quickstart", "--only", "sketch", "--out", str(out)]) == 0
    assert "Sketch (tiny)" in capsys.readouterr().out
    record = json.loads((out / "quickstart_summary.json").read_text())
    assert record["complete"] and [p["metrics"] for p in record["parts"]] == [{"score": 0.5}]
    assert (out / "sketch_tiny.yaml" / "config.yaml").is_file()


def test_a_declaration_that_is_not_a_modality_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "ext" / "broken"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "modality.py").write_text("MODALITY = {'name': 'broken'}\n")
    monkeypatch.setattr(rwkv_mm, "__path__", [*rwkv_mm.__path__, str(tmp_path / "ext")])
    monkeypatch.setattr(modalities, "_FOUND", None)
    try:
        with pytest.raises(TypeError, match=r"rwkv_mm.broken.modality: expected MODALITY = Modality"):
            modalities.modalities()
    finally:
        sys.modules.pop("rwkv_mm.broken.modality", None)
        sys.modules.pop("rwkv_mm.broken", None)


def test_modality_defaults_need_only_a_name_and_a_summary():
    bare = Modality(name="x", summary="y")
    assert (bare.cli, bare.aliases, bare.runners, bare.quickstart) == (None, (), (), ())
    assert QuickstartPart("music/abc_tiny", "t").folder == "abc_tiny"
