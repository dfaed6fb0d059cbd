"""A synthetic multi-label sound-event set in AudioSet's file layout (the tiny recipe's data).

Ten event types — tone, rising chirp, falling chirp, noise band, click train, harmonic stack,
tremolo tone, vibrato tone, noise bursts, knocks — with randomised frequencies, rates and
durations; each clip mixes 1–3 different types at random times and levels over faint
background noise. Everything is drawn from numpy generators seeded by (seed, split, clip), so
the same settings always give the same files.

Written to `out/`: `class_labels_indices.csv`, `{train,eval}_segments.csv` (AudioSet segment
CSVs), `{train,eval}.json` (AST manifests), `clips/<id>.wav` (16-bit PCM) and `synth_info.json`
(the settings, so a changed recipe regenerates), plus `rwkv_mm.generated`'s marker listing them:
`out` must be a new or empty folder or one this builder made, and a rebuild removes only the
files the marker lists (see `build_synth`). With `bad_train_clips`, the training lists
also hold the kinds of damage real downloads have: a missing file, a silent clip, a corrupt
file, a too-short clip and an unknown label — the loader must count them and carry on.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rwkv_mm.errors import ConfigError, check_float, check_int
from rwkv_mm.generated import build_generated

#: (mid, display name) of the ten event types, in class-index order
SYNTH_CLASSES: list[tuple[str, str]] = [
    ("/synth/tone", "Tone"),
    ("/synth/chirp_up", "Rising chirp"),
    ("/synth/chirp_down", "Falling chirp"),
    ("/synth/noise_band", "Noise band"),
    ("/synth/clicks", "Click train"),
    ("/synth/harmonic", "Harmonic stack"),
    ("/synth/tremolo", "Tremolo tone"),
    ("/synth/vibrato", "Vibrato tone"),
    ("/synth/noise_burst", "Noise bursts"),
    ("/synth/knock", "Knocks"),
]
VERSION = 1
#: The lowest sample rate whose Nyquist frequency lies above every event's band (noise bands
#: reach ~7.1 kHz, chirps 7.2 kHz): below it some events would be silent but still labelled.
MIN_SAMPLE_RATE = 16000
#: The shortest clip the generator handles (events are 35–60 % of it; below ~1.3 s a knock train
#: may not fit in its event and stay silent).
MIN_CLIP_SECONDS = 0.1


@dataclass
class SynthConfig:
    """Settings of the generated set (a recipe's `data.synthetic` section)."""

    out: str = "runs/data/audio_synth"
    n_train: int = 1000
    n_eval: int = 250
    clip_seconds: float = 2.0
    sample_rate: int = 16000
    min_events: int = 1
    max_events: int = 3
    seed: int = 0
    bad_train_clips: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out).strip():
            raise ConfigError("out", self.out, "a folder path")
        check_int(self, "n_train", min=1)
        check_int(self, "n_eval", min=1)
        check_float(self, "clip_seconds", min=MIN_CLIP_SECONDS)
        check_int(self, "sample_rate", min=MIN_SAMPLE_RATE)
        check_int(self, "min_events", min=1, max=len(SYNTH_CLASSES))
        check_int(self, "max_events", min=self.min_events, max=len(SYNTH_CLASSES))
        check_int(self, "seed", min=0)
        if not isinstance(self.bad_train_clips, bool):
            raise ConfigError("bad_train_clips", self.bad_train_clips, "true or false")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _sine_from_freq(freq: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """sin of the integrated instantaneous frequency (Hz per sample), random phase."""
    return np.sin(2 * np.pi * np.cumsum(freq) / sr + rng.uniform(0, 2 * np.pi))


def _band_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, n)


def _event(kind: int, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """One event of type `kind`, n samples, unit RMS."""
    t = np.arange(n) / sr
    if kind == 0:  # steady tone
        x = _sine_from_freq(np.full(n, _log_uniform(rng, 300, 3000)), sr, rng)
    elif kind in (1, 2):  # exponential sweep over 1.5–3 octaves
        f0, ratio = _log_uniform(rng, 250, 900), 2 ** rng.uniform(1.5, 3.0)
        freq = f0 * ratio ** (t / t[-1])
        x = _sine_from_freq(freq if kind == 1 else freq[::-1], sr, rng)
    elif kind == 3:  # noise band of 1/2–1 octave
        centre, width = _log_uniform(rng, 1200, 5000), 2 ** rng.uniform(0.5, 1.0)
        x = _band_noise(rng, n, sr, centre / np.sqrt(width), centre * np.sqrt(width))
    elif kind == 4:  # click train: 2 ms decaying broadband clicks at 8–25 Hz
        x = np.zeros(n)
        period = int(sr / rng.uniform(8, 25))
        click = rng.standard_normal(int(0.002 * sr)) * np.exp(-np.arange(int(0.002 * sr)) / (0.0005 * sr))
        for start in range(int(rng.integers(0, period)), n - len(click), period):
            x[start:start + len(click)] += click
    elif kind == 5:  # harmonic stack, f0 100–300 Hz, 6–12 partials with 1/k amplitudes
        f0 = _log_uniform(rng, 100, 300)
        x = sum(_sine_from_freq(np.full(n, f0 * k), sr, rng) / k
                for k in range(1, int(rng.integers(6, 13)) + 1) if f0 * k < sr / 2 - 500)
    elif kind == 6:  # tremolo: deep amplitude modulation at 3–6 Hz
        carrier = _sine_from_freq(np.full(n, _log_uniform(rng, 300, 3000)), sr, rng)
        x = carrier * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))) ** 2
    elif kind == 7:  # vibrato: ±10–15 % frequency modulation at 4–7 Hz
        fc, depth, rate = _log_uniform(rng, 400, 2500), rng.uniform(0.10, 0.15), rng.uniform(4, 7)
        x = _sine_from_freq(fc * (1 + depth * np.sin(2 * np.pi * rate * t)), sr, rng)
    elif kind == 8:  # 2–5 white-noise bursts of 30–80 ms
        x = np.zeros(n)
        for _ in range(int(rng.integers(2, 6))):
            m = int(rng.uniform(0.03, 0.08) * sr)
            start = int(rng.integers(0, max(n - m, 1)))
            x[start:start + m] += rng.standard_normal(min(m, n - start))
    else:  # knocks: damped 80–250 Hz resonances every 100–250 ms
        x = np.zeros(n)
        f, tau, gap = _log_uniform(rng, 80, 250), rng.uniform(0.015, 0.04), rng.uniform(0.10, 0.25)
        m = int(5 * tau * sr)
        knock = np.sin(2 * np.pi * f * np.arange(m) / sr) * np.exp(-np.arange(m) / (tau * sr))
        for start in range(int(rng.integers(0, int(gap * sr))), n - m, int(gap * sr)):
            x[start:start + m] += knock
    rms = np.sqrt(np.mean(np.square(x))) + 1e-12
    return x / rms


def synth_clip(rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, list[int]]:
    """One clip: (float32 waveform [clip_seconds·sr], sorted class indices)."""
    sr, n = cfg.sample_rate, int(round(cfg.clip_seconds * cfg.sample_rate))
    n_events = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    kinds = sorted(rng.choice(len(SYNTH_CLASSES), size=n_events, replace=False).tolist())
    mix = np.zeros(n)
    for kind in kinds:
        dur = int(rng.uniform(0.35, 0.6) * n)
        start = int(rng.integers(0, n - dur + 1))
        fade = np.minimum(1.0, np.minimum(np.arange(dur), np.arange(dur)[::-1]) / (0.01 * sr))
        mix[start:start + dur] += _event(kind, rng, dur, sr) * fade * 10 ** (rng.uniform(-12, 0) / 20)
    background = np.cumsum(rng.standard_normal(n)) * 0.02  # brown-ish noise
    background = (background - background.mean()) / (background.std() + 1e-12)
    mix += background * 10 ** (rng.uniform(-40, -30) / 20) + rng.standard_normal(n) * 10 ** (-45 / 20)
    mix *= rng.uniform(0.3, 0.9) / np.abs(mix).max()
    return mix.astype(np.float32), kinds


def _info(cfg: SynthConfig) -> dict:
    info = dataclasses.asdict(cfg)
    info.pop("out")
    info["version"] = VERSION
    return info


def build_synth(cfg: SynthConfig, force: bool = False) -> Path:
    """Generate the set into `cfg.out` unless an identical one is already there. Returns the folder.

    `cfg.out` must be new, empty, or a set this builder made (`rwkv_mm.generated`): a folder of
    the user's raises `UserError` and nothing is touched. The set is written into a fresh temp
    folder beside it and published with `synth_info.json` last, so an interrupted run never
    leaves a half-written set that looks complete."""
    out = Path(cfg.out)
    info_path = out / "synth_info.json"
    if not force and info_path.is_file():
        try:
            if json.loads(info_path.read_text()) == _info(cfg):
                return out
        except (OSError, ValueError):
            pass
    return build_generated(out, lambda folder: _write_set(folder, cfg), generator="rwkv_mm.audio.synth",
                           sentinel="synth_info.json",
                           setting="`audio synth --out` (or data.synthetic.out in a recipe)")


def _write_set(folder: Path, cfg: SynthConfig) -> None:
    """Write the whole set into `folder` (a fresh, empty one)."""
    import soundfile as sf

    (folder / "clips").mkdir()
    with open(folder / "class_labels_indices.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        w.writerows([i, mid, name] for i, (mid, name) in enumerate(SYNTH_CLASSES))
    dur = f"{cfg.clip_seconds:.3f}"
    for split_id, (split, n_clips) in enumerate((("train", cfg.n_train), ("eval", cfg.n_eval))):
        rows, items = [], []
        for i in range(n_clips):
            rng = np.random.default_rng([cfg.seed, split_id, i])
            wave, kinds = synth_clip(rng, cfg)
            ytid = f"{split[:2]}{i:06d}"
            sf.write(folder / "clips" / f"{ytid}.wav", wave, cfg.sample_rate, subtype="PCM_16")
            mids = ",".join(SYNTH_CLASSES[k][0] for k in kinds)
            rows.append(f'{ytid}, 0.000, {dur}, "{mids}"')
            items.append({"wav": f"clips/{ytid}.wav", "labels": mids})
        if split == "train" and cfg.bad_train_clips:
            rows += _bad_clips(folder / "clips", cfg, items)
        header = [f"# Segments csv created by rwkv_mm.audio.synth (seed {cfg.seed})",
                  f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels={len(SYNTH_CLASSES)}",
                  "# YTID, start_seconds, end_seconds, positive_labels"]
        (folder / f"{split}_segments.csv").write_text("\n".join(header + rows) + "\n", encoding="utf-8")
        (folder / f"{split}.json").write_text(json.dumps({"data": items}, indent=0) + "\n", encoding="utf-8")
    (folder / "synth_info.json").write_text(json.dumps(_info(cfg), indent=2) + "\n")


def _bad_clips(clips: Path, cfg: SynthConfig, items: list[dict]) -> list[str]:
    """Damaged entries appended to the training lists (see the module docstring)."""
    import soundfile as sf

    sr, n = cfg.sample_rate, int(cfg.clip_seconds * cfg.sample_rate)
    sf.write(clips / "bad_silent.wav", np.zeros(n, dtype=np.float32), sr, subtype="PCM_16")
    sf.write(clips / "bad_short.wav", np.full(int(0.02 * sr), 0.1, dtype=np.float32), sr, subtype="PCM_16")
    (clips / "bad_corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
    mid = SYNTH_CLASSES[0][0]
    for name in ("bad_silent", "bad_short", "bad_corrupt", "bad_missing"):
        items.append({"wav": f"clips/{name}.wav", "labels": mid})
    items.append({"wav": "clips/tr000000.wav", "labels": "/m/not_a_class"})
    return [f'{name}, 0.000, 2.000, "{mid}"' for name in ("bad_silent", "bad_short", "bad_corrupt", "bad_missing")] \
        + ['tr000000, 0.000, 2.000, "/m/not_a_class"']
