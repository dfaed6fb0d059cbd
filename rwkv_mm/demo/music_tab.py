"""The demo's music tab: write a tune with a byte-level ABC model, see its score, hear it.

The tune starts from IrishMAN control codes (TunesFormer's: `S:` sections, then for every section
one `E:` similarity (0-10) to each earlier section and its `B:` bar count) and an optional ABC
prompt, as `rwkv-mm music generate --control-codes ... --prompt ...` does, and is sampled by the
same `generate_tunes`. The result is shown as ABC text, as a score drawn in the page by the
bundled abcjs (`static/`), as a `.mid` to download (`write_abc_and_midi`, what the quickstart
writes) and as a WAV preview synthesised in Python (`synth`). `compose` is the tab's logic
(tests call it without a browser); `build_tab` lays out the gradio components around it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from rwkv_mm.errors import UserError

MAX_SECTIONS, MAX_BARS, MAX_PROMPT_CHARS = 8, 64, 2000

#: Draws the ABC text into the score's <div> with abcjs (loaded in the page's <head>).
RENDER_SCORE_JS = """(abc) => {
  const el = document.getElementById('music-score-svg');
  if (!el) return;
  if (!abc || !window.ABCJS) { el.innerHTML = ''; return; }
  window.ABCJS.renderAbc(el, abc, {responsive: 'resize', add_classes: true});
}"""


def control_codes(sections: int, bars: int, similarity: int) -> str:
    """IrishMAN control codes for `sections` sections of `bars` bars, every section `similarity`
    (0-10) alike to each earlier one; "" for 0 sections (no codes). Ends with a newline."""
    for name, value, low, high in (("sections", sections, 0, MAX_SECTIONS), ("bars", bars, 1, MAX_BARS),
                                   ("similarity", similarity, 0, 10)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(f"{name}={value!r}: expected an int in [{low}, {high}]")
    if sections == 0:
        return ""
    lines = [f"S:{sections}"]
    for i in range(sections):
        lines += [f"E:{similarity}"] * i + [f"B:{bars}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TuneSettings:
    """The tab's controls (`rwkv-mm music generate`'s flags and defaults)."""

    sections: int = 2
    bars: int = 8
    similarity: int = 5
    prompt: str = ""
    max_bytes: int = 1024
    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int = 8
    seed: int = 0


@dataclass(frozen=True)
class Tune:
    """A generated tune: the model's text, the ABC as music21 reads it, whether it parsed (and
    its bars, or why not), and its files (None when it did not parse into notes)."""

    text: str
    abc: str
    parsed: bool
    bars: int
    error: str | None
    midi: Path | None
    wav: Path | None

    def summary(self) -> str:
        """One line for the page."""
        if not self.parsed:
            return f"{len(self.text)} bytes; music21 cannot read it ({self.error}): no score to play"
        return f"{len(self.text)} bytes, {self.bars} bars" + ("" if self.midi else "; no notes to play")


def load(path: str | Path):
    """The byte-level model (V=128, a UserError naming the file otherwise) in decode layout."""
    from rwkv_mm.backbone import to_decode_layout
    from rwkv_mm.music.cli import _load_music_model

    return to_decode_layout(_load_music_model(str(path)))


def compose(model, settings: TuneSettings, out_dir: str | Path) -> Tune:
    """Sample one tune with `settings`; write its .abc, .mid and .wav under `out_dir`."""
    from rwkv_mm.backbone import SamplingConfig
    from rwkv_mm.music.generate import generate_tunes
    from rwkv_mm.music.scoring import parse_tune, with_header, write_abc_and_midi

    from .synth import midi_to_wav

    if len(settings.prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt has {len(settings.prompt)} characters, more than {MAX_PROMPT_CHARS}",
                        fix="give an ABC header or the first bars")
    codes = control_codes(settings.sections, settings.bars, settings.similarity)
    sampling = SamplingConfig(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    text = generate_tunes(model, 1, codes + settings.prompt, sampling, settings.max_bytes, settings.seed)[0]
    stem = Path(out_dir) / f"tune_{uuid.uuid4().hex[:12]}"
    _, midi = write_abc_and_midi(text, stem)
    parsed, bars, error = parse_tune(text)
    wav = midi_to_wav(midi, stem.with_suffix(".wav")) if midi else None
    return Tune(text, with_header(text), parsed, bars, error, midi, wav)


def build_tab(model, context) -> None:
    """The tab's components and events (inside a `gr.Tab` of the app's Blocks; `context` is the
    app's DemoContext)."""
    import gradio as gr

    from .ui import shown_in_page

    gr.Markdown("Choose the tune's form with IrishMAN control codes (sections, bars per section, how "
                "alike the sections are), optionally start it with ABC, and generate.")
    with gr.Row():
        with gr.Column(scale=1):
            sections = gr.Slider(0, MAX_SECTIONS, value=2, step=1, label="sections (S:, 0 = no control codes)")
            bars = gr.Slider(1, MAX_BARS, value=8, step=1, label="bars per section (B:)")
            similarity = gr.Slider(0, 10, value=5, step=1, label="similarity between sections (E:, 0-10)")
            prompt = gr.Textbox(label="ABC prompt (optional)", lines=3, placeholder="L:1/8\nM:6/8\nK:G\n",
                                elem_id="music-prompt")
            with gr.Accordion("Sampling", open=False):
                max_bytes = gr.Slider(64, 2048, value=1024, step=64, label="max bytes")
                temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="top-p")
                top_k = gr.Slider(0, 128, value=8, step=1, label="top-k (0 = off)")
                seed = gr.Number(value=0, precision=0, label="seed")
            run = gr.Button("Generate", variant="primary", elem_id="music-generate")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="music-status")
            gr.HTML('<div id="music-score-svg" style="min-height: 120px; background: white;"></div>',
                    label="Score")
            preview = gr.Audio(label="Preview (synthesised)", type="filepath", interactive=False,
                               elem_id="music-audio")
            midi = gr.File(label="MIDI", elem_id="music-midi")
            abc = gr.Textbox(label="ABC", lines=8, elem_id="music-abc")

    @shown_in_page
    def generate(sections, bars, similarity, prompt, max_bytes, temperature, top_p, top_k, seed):
        settings = TuneSettings(int(sections), int(bars), int(similarity), prompt or "", int(max_bytes),
                                float(temperature), float(top_p), int(top_k), int(seed or 0))
        tune = compose(model, settings, context.out_dir)
        files = (str(tune.wav) if tune.wav else None, str(tune.midi) if tune.midi else None)
        return tune.summary(), *files, tune.abc

    run.click(generate, [sections, bars, similarity, prompt, max_bytes, temperature, top_p, top_k, seed],
              [status, preview, midi, abc]).then(None, [abc], None, js=RENDER_SCORE_JS)
