"""The demo's plumbing: the preview synthesiser, finding models, the command, the optional extra."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from rwkv_mm.demo import synth
from rwkv_mm.demo.models import (DEMO_MODELS, check_upload, find_model, find_models, make_command,
                                 quickstart_run)
from rwkv_mm.errors import UserError
from robustness.cli_utils import assert_user_error, run_cli

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- preview synthesis
def test_a_note_sounds_at_its_pitch_for_its_length():
    rate = 22050
    wave = synth.synthesize([(0.5, 1.0, 440.0)], rate)
    assert wave.dtype == np.float32 and abs(np.abs(wave).max() - synth.PEAK) < 1e-6
    assert len(wave) == pytest.approx((1.5 + synth.RELEASE_S) * rate, abs=2)
    assert np.abs(wave[: int(0.5 * rate) - 1]).max() == 0  # silent before the note
    note = wave[int(0.5 * rate): int(1.5 * rate)]
    spectrum = np.abs(np.fft.rfft(note))
    freqs = np.fft.rfftfreq(note.size, 1 / rate)
    assert freqs[spectrum.argmax()] == pytest.approx(440.0, abs=1.5)
    harmonic = spectrum[np.argmin(np.abs(freqs - 880.0))]
    assert 0.3 < harmonic / spectrum.max() < 0.7  # the second harmonic at half the amplitude


def test_notes_from_a_midi_file_have_their_times_and_pitches(tmp_path):
    from rwkv_mm.music.scoring import write_abc_and_midi

    _, midi = write_abc_and_midi("L:1/4\nM:2/4\nQ:1/4=120\nK:C\nA c|[CE]2|\n", tmp_path / "t")
    events = sorted(synth.note_events(midi))
    # at 120 crotchets a minute: A4 at 0 s, C5 at 0.5 s (0.5 s each), then C4+E4 at 1 s for 1 s
    expected = sorted([(0.0, 0.5, 440.0), (0.5, 0.5, 523.25), (1.0, 1.0, 261.63), (1.0, 1.0, 329.63)])
    assert [(s, d) for s, d, _ in events] == [(s, d) for s, d, _ in expected]
    assert [f for *_, f in events] == pytest.approx([f for *_, f in expected], abs=0.01)
    wav = synth.midi_to_wav(midi, tmp_path / "t.wav")
    import soundfile as sf

    data, rate = sf.read(wav)
    assert rate == synth.SAMPLE_RATE and len(data) / rate == pytest.approx(2.0 + synth.RELEASE_S, abs=0.01)


def test_no_notes_is_silence():
    wave = synth.synthesize([])
    assert wave.size >= 1 and not wave.any()


# ----------------------------------------------------------------------------- finding models
def test_each_tab_takes_a_file_its_quickstart_runner_writes():
    """The default model paths follow the quickstart: the modality's last part's run folder and a
    file (or folder) its runner declares among its outputs."""
    from rwkv_mm.modalities import get_modality
    from rwkv_mm.recipe import read_recipe
    from rwkv_mm.runners import get_runner

    for spec in DEMO_MODELS:
        part = get_modality(spec.modality).quickstart[-1]
        outputs = get_runner(read_recipe(part.recipe).runner).outputs
        assert any(o == spec.run_output or o.startswith(spec.run_output + "/") for o in outputs), (spec, outputs)
        assert quickstart_run(spec.modality, "q") == Path("q") / part.folder
    assert [quickstart_run(s.modality) / s.run_output for s in DEMO_MODELS] == [
        Path("runs/quickstart/stage2_tiny/model"), Path("runs/quickstart/synth_tiny/model.pt"),
        Path("runs/quickstart/abc_tiny/model.pth")]


def test_a_missing_default_disables_its_tab_with_the_command_that_makes_one(tmp_path):
    (tmp_path / "synth_tiny").mkdir()
    (tmp_path / "synth_tiny" / "model.pt").write_bytes(b"x")
    found = find_models({"music": str(tmp_path / "synth_tiny" / "model.pt")}, tmp_path)
    vision, audio, music = found
    assert vision.path is None and f"rwkv-mm quickstart --only vision --out {tmp_path}" in vision.missing
    assert "--visual PATH" in vision.missing and str(tmp_path / "stage2_tiny" / "model") in vision.missing
    assert audio.path == tmp_path / "synth_tiny" / "model.pt" and music.path == audio.path
    assert make_command(DEMO_MODELS[2]) == "rwkv-mm quickstart --only music"
    with pytest.raises(UserError, match=r"--audio nope.pt: no such file or folder: pass a tagger checkpoint"):
        find_model(DEMO_MODELS[1], "nope.pt")


def test_uploads_are_checked_before_decoding(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(b"x" * 3000)
    assert check_upload(path, "audio clip", 3000) == path
    with pytest.raises(UserError, match=r"the audio clip is 0.0 MiB, over the demo's limit of .* MiB, clip.wav"):
        check_upload(path, "audio clip", 2999)
    with pytest.raises(UserError, match="no image given: upload an image first"):
        check_upload(None, "image", 10)
    with pytest.raises(UserError, match="not a file"):
        check_upload(tmp_path, "image", 10)


# ----------------------------------------------------------------------------- the command
def test_without_gradio_the_command_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: find_spec gives None
    result = run_cli("demo")
    assert_user_error(result, "needs gradio", "pip install -e '.[demo]'")
    assert len(result.err.strip().splitlines()) == 1


def test_the_command_refuses_a_missing_model_and_an_empty_quickstart(tmp_path):
    pytest.importorskip("gradio")
    assert_user_error(run_cli("demo", "--visual", tmp_path / "nope", "--runs", tmp_path), "--visual", "nope")
    assert_user_error(run_cli("demo", "--runs", tmp_path), "no model to show", "rwkv-mm quickstart")
    assert run_cli("demo", "--port", "0").rc == 2  # argparse: a port in 1..65535


def test_the_host_defaults_to_this_machine_only():
    from rwkv_mm.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.max_upload_mb) == ("127.0.0.1", 7860, 20)


# ----------------------------------------------------------------------------- the optional extra
def _gradio_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, at module level) of every `import gradio` / `from gradio ...` in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "gradio" or n.startswith("gradio.") for n in names):
            found.append((node.lineno, id(node) in top))
    return found


def test_only_the_demo_package_imports_gradio_and_only_when_building_the_page():
    demo = ROOT / "rwkv_mm" / "demo"
    for folder in (ROOT / "rwkv_mm", ROOT / "backbone", ROOT / "cuda"):
        for path in folder.rglob("*.py"):
            imports = _gradio_imports(path)
            if demo in path.parents:
                assert not [line for line, top in imports if top], f"{path}: gradio imported at module level"
            else:
                assert not imports, f"{path} imports gradio (only rwkv_mm/demo may)"
    code = ("import sys, rwkv_mm.demo.app, rwkv_mm.demo.cli, rwkv_mm.demo.vision_tab, rwkv_mm.demo.audio_tab, "
            "rwkv_mm.demo.music_tab, rwkv_mm.demo.synth, rwkv_mm.demo.ui, rwkv_mm.cli as c; c.build_parser(); "
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_extra_and_the_bundled_score_renderer_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(dep.startswith("gradio") for dep in project["project"]["optional-dependencies"]["demo"])
    assert not any(dep.startswith("gradio") for dep in project["project"]["dependencies"])
    data = project["tool"]["setuptools"]["package-data"]["rwkv_mm.demo"]
    static = ROOT / "rwkv_mm" / "demo" / "static"
    for name in ("abcjs-basic-min.js", "abcjs-LICENSE.md"):
        assert (static / name).is_file() and any(Path("static", name).match(glob) for glob in data)
    assert "MIT" in (static / "abcjs-LICENSE.md").read_text() or "Permission is hereby granted" in \
        (static / "abcjs-LICENSE.md").read_text()


def test_a_tab_without_a_model_shows_which_command_makes_one(tmp_path):
    pytest.importorskip("gradio")
    import json

    from rwkv_mm.demo.app import TABS, DemoContext, LoadedTab, build_app

    found = find_models({}, tmp_path / "nothing")
    tabs = [LoadedTab(item.spec.modality, TABS[item.spec.modality][0], None, item.missing) for item in found]
    config = json.dumps(build_app(tabs, DemoContext(2**20, tmp_path)).get_config_file())
    for item in found:
        assert json.dumps(item.missing)[1:-1] in config and item.spec.flag in item.missing
    assert all(title in config for title, _ in TABS.values())
