"""A tune's audio preview: its MIDI notes played by a small additive synthesiser, in Python.

No soundfont and no external synthesiser: each note is a sum of four harmonics (amplitudes
1, 1/2, 1/4, 1/8) under a short attack, an exponential decay and a short release, and the notes
are mixed and scaled to a peak of 0.8. music21 reads the MIDI file (`rwkv_mm.music.scoring`
writes it) and gives every note's start and length in seconds, tempo changes included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050
HARMONICS = (1.0, 0.5, 0.25, 0.125)
ATTACK_S, DECAY_S, RELEASE_S = 0.005, 0.45, 0.03
PEAK = 0.8


def note_events(midi_path: str | Path) -> list[tuple[float, float, float]]:
    """(start s, duration s, frequency Hz) of every note of a MIDI file (a chord: each pitch)."""
    import warnings

    from music21 import chord, converter, note

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = converter.parse(str(midi_path))
    events = []
    for entry in score.flatten().secondsMap:
        element = entry["element"]
        if isinstance(element, (note.Note, chord.Chord)):
            for pitch in element.pitches:
                events.append((float(entry["offsetSeconds"]), float(entry["durationSeconds"]),
                               float(pitch.frequency)))
    return events


def synthesize(events: list[tuple[float, float, float]], sample_rate: int = SAMPLE_RATE,
               max_seconds: float = 120.0) -> np.ndarray:
    """Mono float32 samples [L] of the notes (cut at `max_seconds`; silence for no notes)."""
    end = min(max((s + d for s, d, _ in events), default=0.0) + RELEASE_S, max_seconds)
    out = np.zeros(max(1, int(np.ceil(end * sample_rate))), dtype=np.float64)  # [L]
    for start, duration, freq in events:
        first = int(round(start * sample_rate))
        n = min(int(round((duration + RELEASE_S) * sample_rate)), out.size - first)
        if n <= 0 or freq <= 0:
            continue
        t = np.arange(n) / sample_rate  # [n] seconds into the note
        envelope = np.minimum(t / ATTACK_S, 1.0) * np.exp(-t / DECAY_S)
        envelope *= np.clip((duration + RELEASE_S - t) / RELEASE_S, 0.0, 1.0)  # release at the note's end
        tone = sum(a * np.sin(2 * np.pi * freq * (k + 1) * t)
                   for k, a in enumerate(HARMONICS) if freq * (k + 1) < sample_rate / 2)
        out[first:first + n] += envelope * tone
    peak = float(np.abs(out).max())
    return (out * (PEAK / peak) if peak > 0 else out).astype(np.float32)


def midi_to_wav(midi_path: str | Path, wav_path: str | Path, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write the audio preview of `midi_path` as a 16-bit WAV file; returns its path."""
    import soundfile as sf

    wav_path = Path(wav_path)
    sf.write(str(wav_path), synthesize(note_events(midi_path), sample_rate), sample_rate, subtype="PCM_16")
    return wav_path
