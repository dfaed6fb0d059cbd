"""Audio files → mono float32 waveforms at the model's sample rate, cut or padded to a length."""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_mm.errors import UserError

#: Extensions looked for when a clip is named by its id (soundfile/libsndfile reads them all;
#: mp3 needs libsndfile >= 1.1).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioLoadError(UserError):
    """A file that could not be read as audio (the message names the file and the reason)."""


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Read `path` (wav/flac/ogg/... via soundfile), average the channels, resample.

    Returns a float32 waveform [L] at `sample_rate` (values as stored, typically in [-1, 1]).
    Raises AudioLoadError naming the file when it is missing or unreadable.
    """
    import soundfile as sf

    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [L, C]
    except FileNotFoundError:
        raise AudioLoadError(f"{path}: no such file") from None
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError/TypeError by format
        raise AudioLoadError(f"{path}: unreadable audio ({type(err).__name__}: {err})") from None
    wave = torch.from_numpy(data).mean(dim=1)  # [L]
    return resample(wave, int(sr), sample_rate)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited (sinc) resampling of [..., L] from `orig_rate` to `new_rate` (torchaudio)."""
    if orig_rate == new_rate:
        return wave
    import torchaudio.functional as AF

    return AF.resample(wave, orig_rate, new_rate)


def fix_length(wave: torch.Tensor, length: int, offset: int = 0) -> torch.Tensor:
    """Crop [L] to `length` samples starting at `offset`, or zero-pad it at the end. Returns [length]."""
    if wave.shape[-1] > length:
        offset = max(0, min(offset, wave.shape[-1] - length))
        return wave[..., offset:offset + length]
    return torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))


def random_offset(n_samples: int, length: int, generator: torch.Generator | None = None) -> int:
    """A uniform crop start in [0, n_samples - length] (0 when the clip is not longer)."""
    if n_samples <= length:
        return 0
    return int(torch.randint(0, n_samples - length + 1, (), generator=generator))
