"""The demo's audio tab: tag an uploaded or recorded clip with an AudioRWKV tagger.

The labels are `rwkv_mm.audio.tagger.tag_file`'s, what `rwkv-mm audio tag` prints: the clip is
read by the training loader (`load_audio`: any rate and channel count, NaN/Inf and too-short
clips refused with the file named) and scored window by window. The picture is the clip's log-mel
filterbank, the features the tagger reads before normalisation. `tag_clip` is the tab's logic
(tests call it without a browser); `build_tab` lays out the gradio components around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import check_upload


@dataclass
class Tagger:
    """A loaded tagger checkpoint: the model, its features and class names."""

    model: object  # rwkv_mm.audio.model.AudioRWKV
    features: object  # rwkv_mm.audio.features.AudioFeatures
    names: list[str]
    mids: list[str]

    @classmethod
    def load(cls, path: str | Path) -> Tagger:
        """A tagger checkpoint (the runner's model.pt), checked as `rwkv-mm audio tag` checks it."""
        from rwkv_mm.audio.checkpoint import load_tagger

        model, features, ckpt = load_tagger(path)
        return cls(model, features, list(ckpt["names"]), list(ckpt["mids"]))


def tag_clip(tagger: Tagger, clip: str | Path | None, k: int, max_bytes: int
             ) -> tuple[list[tuple[str, str, float]], np.ndarray]:
    """(top-k (name, mid, probability), best first; the log-mel picture as RGB [H, W, 3]) of a clip."""
    import torch

    from rwkv_mm.audio.io import load_audio
    from rwkv_mm.audio.tagger import tag_file

    path = check_upload(clip, "audio clip", max_bytes)
    with torch.no_grad():
        labels = tag_file(path, tagger.model, tagger.features, tagger.names, tagger.mids, k)
        cfg = tagger.features.cfg
        wave = load_audio(path, cfg.sample_rate, min_samples=cfg.window_size)  # [L]
        mel = tagger.features.fbank(wave[None])[0]  # [T, M] log-mel
    return labels, spectrogram_picture(mel.numpy(), cfg.frame_shift_ms / 1000.0, path.name)


def spectrogram_picture(mel: np.ndarray, frame_shift_s: float, title: str) -> np.ndarray:
    """A log-mel filterbank [T, M] drawn as an RGB picture [H, W, 3] (time across, mel bins up)."""
    from rwkv_mm.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=100)
    try:
        frames, bins = mel.shape
        image = ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
                          extent=(0.0, frames * frame_shift_s, 0, bins))
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel bin")
        ax.set_title(f"log-mel filterbank: {title}", fontsize=9)
        fig.colorbar(image, ax=ax, pad=0.01, label="log energy")
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def label_scores(labels: list[tuple[str, str, float]]) -> dict[str, float]:
    """{"name (mid)": probability} as gradio's Label draws it: one bar per label."""
    return {f"{name} ({mid})": p for name, mid, p in labels}


def load(path: str | Path) -> Tagger:
    """The tab's model (see `Tagger.load`)."""
    return Tagger.load(path)


def build_tab(tagger: Tagger, context) -> None:
    """The tab's components and events (inside a `gr.Tab` of the app's Blocks; `context` is the
    app's DemoContext)."""
    import gradio as gr

    from .ui import shown_in_page

    gr.Markdown(f"Upload a clip or record one; the tagger scores its {len(tagger.names)} classes "
                "(a class's score is its highest over the clip's windows).")
    with gr.Row():
        with gr.Column(scale=1):
            clip = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None,
                            label="Clip", elem_id="audio-clip")
            k = gr.Slider(1, max(1, len(tagger.names)), value=min(5, len(tagger.names)), step=1,
                          label="top-k labels")
            run = gr.Button("Tag", variant="primary", elem_id="audio-tag")
        with gr.Column(scale=2):
            scores = gr.Label(label="Top labels", elem_id="audio-labels")
            picture = gr.Image(label="Log-mel spectrogram", type="numpy", interactive=False,
                               elem_id="audio-mel")

    @shown_in_page
    def tag(clip, k):
        if clip is None:
            return None, None
        labels, mel = tag_clip(tagger, clip, int(k), context.max_bytes)
        return gr.Label(value=label_scores(labels), num_top_classes=int(k)), mel

    for event in (run.click, clip.change):
        event(tag, [clip, k], [scores, picture])
