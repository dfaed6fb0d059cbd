"""Tiny models for the demo's tests, written where `rwkv-mm demo` looks for the quickstart's
(`<runs>/stage2_tiny/model`, `<runs>/synth_tiny/model.pt`, `<runs>/abc_tiny/model.pth`), plus an
image and a clip to upload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from rwkv_mm.audio.checkpoint import save_tagger
from rwkv_mm.audio.fbank import FbankConfig
from rwkv_mm.audio.features import AudioFeatures, FeatureStats
from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig
from rwkv_mm.backbone import RWKVConfig, save_model
from rwkv_mm.vision.checkpoint import save_visual_rwkv
from rwkv_mm.vision.conversation import ChatTemplate
from rwkv_test_utils import tiny_model
from vision.vision_test_utils import tiny_vision_config, tiny_visual_model

MIDS, NAMES = ["/m/a", "/m/b", "/m/c"], ["Aa", "Bb", "Cc"]
#: A four-bar tune in A major (A4 = 440 Hz) at 60 crotchets a minute: one crotchet a second.
TUNE = "L:1/4\nM:4/4\nQ:1/4=60\nK:A\nA B c d|e f g a|a g f e|d c B A|\n"


def tiny_tagger(seed: int = 0) -> tuple[AudioRWKV, AudioFeatures]:
    """A randomly weighted three-class tagger on 32 mel bins."""
    torch.manual_seed(seed)
    model = AudioRWKV(AudioRWKVConfig(
        backbone=RWKVConfig(n_layer=1, n_embd=32, head_size=16, dim_ffn=128, tm_lora_rank=4, decay_lora_rank=4),
        num_classes=3, num_mel_bins=32, target_frames=48, patch=(8, 8), stride=(8, 8)))
    return model.eval(), AudioFeatures(FbankConfig(num_mel_bins=32), 48, FeatureStats(-6.0, 3.0))


def ending_music_model(seed: int = 0):
    """A byte-level model (V=128) whose every step gives the end token: a tune is its prompt."""
    model = tiny_model("5", n_layer=1, n_embd=32, vocab_size=128, head_size=16, seed=seed)
    with torch.no_grad():
        model.ln_out.weight.zero_()
        model.ln_out.bias.fill_(1.0)  # the normed hidden state is all ones
        model.head.weight.zero_()
        model.head.weight[3] = 1.0  # END (id 3) has logit D = 32, every other byte 0
    return model


def write_models(runs: Path, music_model=None) -> dict[str, Path]:
    """The three tiny models in the quickstart's layout under `runs`; returns them by modality."""
    vision = tiny_vision_config()
    visual = runs / "stage2_tiny" / "model"
    save_visual_rwkv(tiny_visual_model(vision=vision, seed=5), visual, vision, ChatTemplate(), "first")
    tagger, features = tiny_tagger()
    audio = save_tagger(runs / "synth_tiny" / "model.pt", tagger, features, MIDS, NAMES)
    (runs / "abc_tiny").mkdir(parents=True, exist_ok=True)
    music = save_model(music_model or ending_music_model(), runs / "abc_tiny" / "model.pth")
    return {"vision": visual, "audio": Path(audio), "music": Path(music)}


def write_image(path: Path, colour=(200, 10, 10)) -> Path:
    """A 32-px square of one colour with a white corner."""
    image = Image.new("RGB", (32, 32), colour)
    image.paste((255, 255, 255), (0, 0, 8, 8))
    image.save(path)
    return path


def write_clip(path: Path, seconds: float = 1.5, rate: int = 22050) -> Path:
    """A stereo clip: a 660 Hz tone over quiet noise, at another rate than the tagger's."""
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 660 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, np.stack([tone, tone * 0.5], axis=1), rate)
    return path
