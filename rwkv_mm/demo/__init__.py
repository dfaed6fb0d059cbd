"""`rwkv-mm demo`: a web page to talk to the models (gradio; `pip install -e '.[demo]'`).

One tab per modality, one module per tab: `vision_tab` (chat about an image, streamed, later
turns continuing from the recurrent state), `audio_tab` (top-k labels and the log-mel picture of a
clip), `music_tab` (a tune from control codes: ABC, score, MIDI, a synthesised preview, `synth`);
`app` puts them on one page, `models` finds each tab's model (the quickstart's by default) and
checks uploads, `ui` shows a user's mistake in the page, `cli` is the command.

Why one package and not a tab in each modality's package: gradio is an optional extra, and
keeping every module that imports it here keeps the core install free of it (a test checks
that nothing outside `rwkv_mm.demo` imports gradio) and the modality packages usable without
it. The tab modules hold no model code: each calls its modality's own functions (`ImageChat`,
`tag_file`, `generate_tunes`, `write_abc_and_midi`), so a tab shows what the commands do.
Nothing in this package imports gradio at import time except inside the `build_tab` functions
and `app`'s builders, so the tabs' logic is testable without it.
"""
