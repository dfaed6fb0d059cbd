"""`rwkv-mm demo`'s page: one gradio tab per modality, each with its model loaded once.

A tab module (`vision_tab`, `audio_tab`, `music_tab`) has `load(path)` (its model, with the
checks of the modality's own commands) and `build_tab(model, context)` (its components and
events); `TABS` names them in page order, keyed by modality. A tab whose model is missing shows
the message of `models.find_model` instead (which command makes one).

The page works offline: the theme uses the system's fonts (gradio's default fetches web fonts)
and the score renderer (abcjs) is read from this package's `static/` into the page's <head>.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .models import Found

#: modality -> (tab title, tab module), in page order.
TABS = {
    "vision": ("Vision chat", "rwkv_mm.demo.vision_tab"),
    "audio": ("Audio tagging", "rwkv_mm.demo.audio_tab"),
    "music": ("Music", "rwkv_mm.demo.music_tab"),
}
STATIC = Path(__file__).parent / "static"
ABCJS = STATIC / "abcjs-basic-min.js"


@dataclass(frozen=True)
class DemoContext:
    """What the tabs share: the upload limit and the folder generated files are written to."""

    max_bytes: int
    out_dir: Path


@dataclass
class LoadedTab:
    """A tab's title and model, or (model None) the message shown instead."""

    modality: str
    title: str
    model: object | None
    message: str = ""
    path: Path | None = None


def load_tabs(found: list[Found]) -> list[LoadedTab]:
    """Load every tab's model (a bad checkpoint is a UserError naming it, before the server
    starts); a tab without a model keeps the message that says which command makes one."""
    tabs = []
    for item in found:
        title, module = TABS[item.spec.modality]
        if item.path is None:
            tabs.append(LoadedTab(item.spec.modality, title, None, item.missing))
            continue
        model = importlib.import_module(module).load(item.path)
        tabs.append(LoadedTab(item.spec.modality, title, model, path=item.path))
    return tabs


def theme():
    """gradio's default look with the system's fonts: nothing fetched from the web."""
    import gradio as gr

    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def page_head() -> str:
    """The page's extra <head>: the bundled abcjs (it draws the music tab's score)."""
    return f"<script>{ABCJS.read_text(encoding='utf-8')}</script>"


def build_app(tabs: list[LoadedTab], context: DemoContext):
    """The gradio Blocks of the demo (not launched)."""
    import gradio as gr

    # uploads and outputs in gradio's cache: removed after an hour, and when the server stops
    with gr.Blocks(title="rwkv-mm demo", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown("## rwkv-mm demo: Eagle/Finch with images, sounds and music")
        with gr.Tabs():
            for tab in tabs:
                with gr.Tab(tab.title, id=tab.modality, elem_id=f"tab-{tab.modality}"):
                    if tab.model is None:
                        gr.Markdown(tab.message, elem_id=f"{tab.modality}-missing")
                    else:
                        gr.Markdown(f"Model: `{tab.path}`", elem_classes=["model-path"])
                        importlib.import_module(TABS[tab.modality][1]).build_tab(tab.model, context)
    return app


def temp_folder() -> Path:
    """A new folder for the files the demo generates (MIDI, WAV); `close_demo` removes it."""
    return Path(tempfile.mkdtemp(prefix="rwkv_mm_demo_"))


def launch(app, context: DemoContext, host: str, port: int, block: bool = True):
    """Serve `app` on host:port (uploads over `context.max_bytes` refused by the server too)."""
    return app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, max_file_size=context.max_bytes, prevent_thread_lock=not block,
        head=page_head(), theme=theme(), allowed_paths=[str(context.out_dir)], quiet=not block,
        footer_links=[], show_error=False)


def close_demo(app, context: DemoContext) -> None:
    """Stop the server and remove the generated files."""
    try:
        app.close()
    finally:
        shutil.rmtree(context.out_dir, ignore_errors=True)
