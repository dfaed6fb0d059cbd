"""Audio files → mono float32 waveforms at the model's sample rate, cut or padded to a length."""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_mm.errors import UserError

#: Extensions looked for when a clip is named by its id or a folder is scanned (soundfile /
#: libsndfile reads them all; mp3 needs libsndfile >= 1.1, Ogg/Opus >= 1.0.29).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


class AudioLoadError(UserError):
    """A file that cannot be used as audio; the message names the file and the reason.

    `reason` sorts it for the datasets' problem reports: "unreadable" (missing, not audio,
    undecodable), "non_finite" (NaN/Inf samples) or "too_short" (under one analysis window)."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None,
                 reason: str = "unreadable") -> None:
        super().__init__(what, where, fix)
        self.reason = reason


def load_audio(path: str | Path, sample_rate: int = 16000, min_samples: int = 0) -> torch.Tensor:
    """Read `path` (wav/flac/ogg/opus/mp3 via soundfile), average the channels, resample.

    Returns a float32 waveform [L] at `sample_rate` (values as stored, typically in [-1, 1]).
    Raises AudioLoadError naming the file when it is missing, not a file, unreadable, holds a
    NaN/Inf sample, or gives fewer than `min_samples` samples at `sample_rate` (pass the fbank's
    window size: a shorter clip has no frame to analyse).
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioLoadError("no such audio file", where=str(path))
    if not path.is_file():
        raise AudioLoadError("not an audio file (a directory or special file)", where=str(path))
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [L, C]
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError/TypeError by format
        raise AudioLoadError(f"unreadable audio ({type(err).__name__}: {err})", where=str(path)) from None
    wave = torch.from_numpy(data).mean(dim=1)  # [L]
    check_finite(wave, str(path), int(sr))
    wave = resample(wave, int(sr), sample_rate)
    check_length(wave, str(path), sample_rate, min_samples)
    return wave


def check_finite(wave: torch.Tensor, where: str, sample_rate: int) -> None:
    """Raise AudioLoadError (reason "non_finite") naming `where` and the first NaN/Inf sample of [L]."""
    bad = ~torch.isfinite(wave)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise AudioLoadError(f"{int(bad.sum())} non-finite (NaN/Inf) sample(s), the first at sample {first} "
                             f"({first / sample_rate:.3f} s)", where=where,
                             fix="repair or remove the file", reason="non_finite")


def check_length(wave: torch.Tensor, where: str, sample_rate: int, min_samples: int) -> None:
    """Raise AudioLoadError (reason "too_short") when [L] has fewer than `min_samples` samples."""
    n = wave.shape[-1]
    if n < min_samples:
        raise AudioLoadError(f"too short: {n} sample(s) ({n / sample_rate:.4f} s) at {sample_rate} Hz, "
                             f"need at least {min_samples} ({min_samples / sample_rate:.4f} s)", where=where,
                             reason="too_short")


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited (sinc) resampling of [..., L] from `orig_rate` to `new_rate` (torchaudio)."""
    if orig_rate == new_rate or wave.shape[-1] == 0:
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
