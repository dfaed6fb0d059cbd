"""The demo's tabs as plain Python (no gradio, no browser): they give what the commands give."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from rwkv_mm.demo import audio_tab, music_tab, vision_tab
from rwkv_mm.errors import UserError
from demo_test_utils import TUNE, ending_music_model, write_clip, write_image, write_models
from robustness.cli_utils import run_cli

MB = 2**20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("runs") / "quickstart")


def cli_chat(checkpoint, image, prompts, max_tokens, monkeypatch) -> list[str]:
    """`rwkv-mm chat` in its interactive mode, one answer per prompt."""
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(p + "\n" for p in prompts) + "\n"))
    result = run_cli("chat", "--checkpoint", checkpoint, "--image", image, "--max-tokens", str(max_tokens))
    assert result.rc == 0, result.err
    turns = result.out.split("User: ")[1:-1]  # each "Assistant: <answer>\n"
    assert len(turns) == len(prompts) and all(t.startswith("Assistant: ") for t in turns), result.out
    return [t[len("Assistant: "):-1] for t in turns]


# ----------------------------------------------------------------------------- vision
def test_streamed_chat_continues_the_state_and_equals_the_chat_command(models, tmp_path, monkeypatch):
    image = write_image(tmp_path / "red.png")
    prompts = ["What colour is it?", "And the corner?", "Say more."]
    expected = cli_chat(models["vision"], image, prompts, 6, monkeypatch)

    model = vision_tab.load(models["vision"])
    tower_calls = []
    model.model.vit.register_forward_hook(lambda *_: tower_calls.append(1))
    session, history = None, []
    for i, prompt in enumerate(prompts):
        steps = list(vision_tab.chat_turn(model, session, image, prompt, history,
                                          vision_tab.ChatSettings(max_tokens=6), 5 * MB))
        assert len(steps) >= 3  # "…", then one step per text piece, then the final stats
        session, history, stats = steps[-1]
        partial = [h[-1]["content"] for _, h, _ in steps]
        assert all(b.startswith(a) for a, b in zip(partial, partial[1:]))  # the answer grows as it streams
        assert history[-1] == {"role": "assistant", "content": expected[i]}
        assert history[-2] == {"role": "user", "content": prompt}
        turn = session.chat.last_turn
        assert f"turn {i + 1}:" in stats and "tokens/s" in stats and turn.tokens >= 1
        assert turn.with_image == (i == 0)
    assert len(history) == 2 * len(prompts)
    assert len(tower_calls) == 1  # the image was read once, on the first turn


def test_the_session_keeps_its_sampler_unless_the_settings_change(models, tmp_path):
    model = vision_tab.load(models["vision"])
    image = write_image(tmp_path / "a.png")
    settings = vision_tab.ChatSettings(temperature=1.0, top_p=0.9, max_tokens=3, seed=7)
    session, _, _ = list(vision_tab.chat_turn(model, None, image, "Hi?", [], settings, MB))[-1]
    sampler = session.chat.sampler
    list(vision_tab.chat_turn(model, session, image, "Again?", [], settings, MB))
    assert session.chat.sampler is sampler  # seeded sampling goes on as in `rwkv-mm chat`
    greedy = vision_tab.ChatSettings(max_tokens=2)
    list(vision_tab.chat_turn(model, session, image, "Greedy?", [], greedy, MB))
    assert session.chat.sampler is not sampler and session.chat.max_tokens == 2 and session.chat.turns == 3


def test_vision_errors_are_the_commands(models, tmp_path):
    model = vision_tab.load(models["vision"])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cli = run_cli("chat", "--checkpoint", models["vision"], "--image", bad, "--prompt", "x")
    with pytest.raises(UserError) as err:
        list(vision_tab.chat_turn(model, None, bad, "What?", [], vision_tab.ChatSettings(), MB))
    assert cli.rc == 2 and f"rwkv-mm: error: {err.value}" in cli.err and "broken.png" in str(err.value)
    big = write_image(tmp_path / "big.png")
    with pytest.raises(UserError, match=r"big.png: .*--max-upload-mb"):
        vision_tab.read_image(big, 100)
    with pytest.raises(UserError, match="no image given"):
        vision_tab.read_image(None, MB)
    with pytest.raises(UserError, match="question is empty"):
        list(vision_tab.chat_turn(model, None, big, "  ", [], vision_tab.ChatSettings(), MB))


def test_a_decoded_picture_is_what_the_model_reads(models, tmp_path):
    """16-bit and transparent uploads go through open_image: the preview is what the model sees."""
    import numpy as np

    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 257 * 200, dtype=np.uint16)).save(path)  # 16-bit grey 200
    picture = vision_tab.read_image(path, MB)
    assert picture.mode == "RGB" and picture.getpixel((0, 0)) == (200, 200, 200)


# ----------------------------------------------------------------------------- audio
def test_tagging_equals_the_tag_command(models, tmp_path):
    clip = write_clip(tmp_path / "tone.wav")
    cli = run_cli("audio", "tag", clip, "--checkpoint", models["audio"], "--top-k", "3")
    assert cli.rc == 0, cli.err
    printed = [line.split() for line in cli.out.splitlines()[1:]]  # "  p  name  (mid)"
    labels, picture = audio_tab.tag_clip(audio_tab.load(models["audio"]), clip, 3, MB)
    assert [[f"{p:.3f}", name, f"({mid})"] for name, mid, p in labels] == printed
    assert picture.dtype.name == "uint8" and picture.ndim == 3 and picture.shape[2] == 3
    assert audio_tab.label_scores(labels) == {f"{n} ({m})": p for n, m, p in labels}


def test_the_spectrogram_is_the_clips_filterbank(tmp_path):
    """The picture's image area follows the log-mel values: time across, mel bins up, louder
    brighter (magma: black to pale yellow)."""
    import numpy as np

    mel = np.zeros((100, 32))
    mel[:, 24:28] = 10.0  # a loud band of 4 high bins, all along
    picture = audio_tab.spectrogram_picture(mel, 0.01, "x").astype(int)  # [H, W, 3]
    column = picture[:, picture.shape[1] // 3]  # [H, 3] through the image area
    loud = np.flatnonzero(np.abs(column - (252, 253, 191)).sum(axis=1) < 40)
    quiet = np.flatnonzero(np.abs(column - (0, 0, 4)).sum(axis=1) < 40)
    assert loud.size and quiet.size and loud.mean() < quiet.mean()  # the band is drawn in the upper part
    assert abs(loud.size / (loud.size + quiet.size) - 4 / 32) < 0.03  # and 4 bins of 32 high


def test_audio_errors_are_the_commands(models, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    cli = run_cli("audio", "tag", bad, "--checkpoint", models["audio"])
    tagger = audio_tab.load(models["audio"])
    with pytest.raises(UserError) as err:
        audio_tab.tag_clip(tagger, bad, 3, MB)
    assert cli.rc == 2 and f"rwkv-mm: error: {err.value}" in cli.err and "bad.wav" in str(err.value)
    with pytest.raises(UserError, match="limit"):
        audio_tab.tag_clip(tagger, write_clip(tmp_path / "long.wav"), 3, 1000)


# ----------------------------------------------------------------------------- music
def test_control_codes_match_the_corpus():
    """Our codes are IrishMAN's: every bundled tune whose sections share one bar count and one
    similarity has exactly the codes `control_codes` writes for them."""
    import json
    import re

    from rwkv_mm.shipped import resolve_shipped

    tunes = json.loads(Path(resolve_shipped("pkg:data/music/train.json")).read_text())
    checked = 0
    for tune in tunes:
        code = tune["control code"]
        bars, similarities = set(re.findall(r"B:(\d+)", code)), set(re.findall(r"E:(\d+)", code))
        if len(bars) == 1 and len(similarities) <= 1:
            sections = int(re.match(r"S:(\d+)", code).group(1))
            if sections > music_tab.MAX_SECTIONS or int(next(iter(bars))) > music_tab.MAX_BARS:
                continue
            similarity = int(next(iter(similarities))) if similarities else 0
            assert music_tab.control_codes(sections, int(next(iter(bars))), similarity) == code
            checked += 1
    assert checked > 1000
    assert music_tab.control_codes(3, 9, 5) == "S:3\nB:9\nE:5\nB:9\nE:5\nE:5\nB:9\n"
    assert music_tab.control_codes(0, 8, 5) == ""
    with pytest.raises(UserError, match=r"similarity=11: expected an int in \[0, 10\]"):
        music_tab.control_codes(2, 8, 11)


def test_compose_returns_parseable_abc_a_midi_file_and_a_preview(tmp_path):
    from rwkv_mm.backbone import save_model
    from rwkv_mm.music.scoring import parse_tune

    save_model(ending_music_model(), tmp_path / "m.pth")
    model = music_tab.load(tmp_path / "m.pth")
    tune = music_tab.compose(model, music_tab.TuneSettings(sections=1, bars=4, prompt=TUNE), tmp_path / "out")
    assert tune.text == "S:1\nB:4\n" + TUNE  # the codes, the prompt, then the end token
    assert tune.abc.startswith("X:1\n") and "S:1" not in tune.abc
    assert parse_tune(tune.abc) == (True, 4, None) and tune.parsed and tune.bars == 4
    assert tune.midi.read_bytes()[:4] == b"MThd" and tune.midi.parent == tmp_path / "out"
    import soundfile as sf

    wave, rate = sf.read(tune.wav)
    assert abs(len(wave) / rate - 16.0) < 0.1  # 16 crotchets at one a second (+ the release)
    assert "4 bars" in tune.summary()


def test_a_tune_that_does_not_parse_has_no_files(tmp_path):
    from rwkv_mm.backbone import save_model

    save_model(ending_music_model(), tmp_path / "m.pth")
    tune = music_tab.compose(music_tab.load(tmp_path / "m.pth"), music_tab.TuneSettings(sections=0, prompt="x"),
                             tmp_path)
    assert tune.midi is None and tune.wav is None and not tune.parsed
    assert tune.summary() == "1 bytes; music21 cannot read it (no notes): no score to play"


def test_music_errors(tmp_path):
    from rwkv_mm.backbone import save_model

    from rwkv_test_utils import tiny_model

    save_model(tiny_model("5", n_layer=1, n_embd=32, vocab_size=256, head_size=16), tmp_path / "text.pth")
    with pytest.raises(UserError, match="not a byte-level music model"):
        music_tab.load(tmp_path / "text.pth")
    save_model(ending_music_model(), tmp_path / "m.pth")
    with pytest.raises(UserError, match="prompt has 2001 characters"):
        music_tab.compose(music_tab.load(tmp_path / "m.pth"), music_tab.TuneSettings(prompt="a" * 2001), tmp_path)


def test_a_random_model_still_gives_a_result(tmp_path):
    from rwkv_mm.backbone import save_model

    from rwkv_test_utils import tiny_model

    save_model(tiny_model("5", n_layer=1, n_embd=32, vocab_size=128, head_size=16), tmp_path / "r.pth")
    tune = music_tab.compose(music_tab.load(tmp_path / "r.pth"), music_tab.TuneSettings(max_bytes=64), tmp_path)
    assert tune.text.startswith("S:2\nB:8\nE:5\nB:8\n") and len(tune.text) <= len("S:2\nB:8\nE:5\nB:8\n") + 64
    assert tune.summary()
