"""Kaldi-compatible log-mel filterbank (as AST uses it), batched and on any device.

`KaldiFbank` computes what `torchaudio.compliance.kaldi.fbank` (Kaldi's compute-fbank-feats)
computes for one clip, for a whole batch [B, L] at once: frames of 25 ms every 10 ms that fit
entirely in the signal (snip_edges), per-frame DC removal, pre-emphasis 0.97 (the first sample
of a frame uses itself as its predecessor), a symmetric window, zero padding to the next power
of two, the power spectrum, triangular filters equally spaced on Kaldi's mel scale
1127·ln(1 + f/700) between `low_freq` and `high_freq` (Nyquist bin excluded), and
log(max(energy, float32 eps)). No dither. The filters are built here from those formulas,
independently of torchaudio; `reference_fbank` is torchaudio's function, the reference the
tests and bench/fbank.py compare against.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rwkv_mm.errors import ConfigError, check_choice, check_float, check_int

from . import fbank_native

#: numeric_limits<float>::epsilon(), Kaldi's floor before the log
FLOAT_EPS = float(torch.finfo(torch.float32).eps)
WINDOWS = ("hanning", "hamming", "povey", "rectangular")


@dataclass(frozen=True)
class FbankConfig:
    """Filterbank settings (Kaldi option names in parentheses). Defaults: AST's features."""

    sample_rate: int = 16000  # (sample-frequency)
    num_mel_bins: int = 128  # (num-mel-bins)
    frame_length_ms: float = 25.0  # (frame-length)
    frame_shift_ms: float = 10.0  # (frame-shift)
    low_freq: float = 20.0  # (low-freq)
    high_freq: float = 0.0  # (high-freq); <= 0 is an offset from Nyquist
    preemphasis: float = 0.97  # (preemphasis-coefficient)
    remove_dc_offset: bool = True  # (remove-dc-offset)
    window: str = "hanning"  # (window-type); Kaldi's default is povey, AST uses hanning

    def __post_init__(self) -> None:
        check_int(self, "sample_rate", min=1)
        check_int(self, "num_mel_bins", min=4)
        check_float(self, "frame_length_ms", gt=0.0)
        check_float(self, "frame_shift_ms", gt=0.0)
        check_float(self, "low_freq", min=0.0)
        check_float(self, "high_freq")
        check_float(self, "preemphasis", min=0.0, max=1.0)
        check_choice(self, "remove_dc_offset", (True, False))
        check_choice(self, "window", WINDOWS)
        if self.window_size < 2:
            raise ConfigError("frame_length_ms", self.frame_length_ms,
                              f"a frame of at least 2 samples at {self.sample_rate} Hz")
        if self.window_shift < 1:
            raise ConfigError("frame_shift_ms", self.frame_shift_ms,
                              f"a shift of at least 1 sample at {self.sample_rate} Hz")
        nyquist = self.sample_rate / 2
        if not 0 < self.high_hz <= nyquist:
            raise ConfigError("high_freq", self.high_freq, f"a frequency in (0, {nyquist}] Hz (Nyquist), or an "
                                                           "offset <= 0 from Nyquist")
        if self.low_freq >= self.high_hz:
            raise ConfigError("low_freq", self.low_freq, f"below the upper filter edge ({self.high_hz} Hz)")

    @property
    def high_hz(self) -> float:
        """The upper edge of the filters in Hz (`high_freq` <= 0 is an offset from Nyquist)."""
        return self.high_freq if self.high_freq > 0 else self.sample_rate / 2 + self.high_freq

    @property
    def window_size(self) -> int:
        """Samples per frame (400 at 16 kHz, 25 ms)."""
        return int(self.sample_rate * self.frame_length_ms * 1e-3)

    @property
    def window_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz, 10 ms)."""
        return int(self.sample_rate * self.frame_shift_ms * 1e-3)

    @property
    def n_fft(self) -> int:
        """FFT length: the window size rounded up to a power of two (512)."""
        return 1 << (self.window_size - 1).bit_length()

    def num_frames(self, n_samples: int) -> int:
        """Frames Kaldi produces for `n_samples` (snip_edges: only frames that fit)."""
        if n_samples < self.window_size:
            return 0
        return 1 + (n_samples - self.window_size) // self.window_shift

    def num_samples(self, n_frames: int) -> int:
        """The shortest signal that gives `n_frames` frames (1024 frames: 164,080 samples = 10.255 s)."""
        return self.window_size + (n_frames - 1) * self.window_shift


def kaldi_mel_banks(cfg: FbankConfig) -> torch.Tensor:
    """Triangular mel filters as a [n_fft/2 + 1, num_mel_bins] float32 matrix (Nyquist row zero).

    Filter m spans mel points m, m+1, m+2 of num_mel_bins + 2 equally spaced points between
    mel(low_freq) and mel(high_freq), mel(f) = 1127·ln(1 + f/700); its weight at FFT bin i
    (frequency i·sr/n_fft) rises linearly in mel from 0 at the left point to 1 at the centre and
    falls to 0 at the right. Computed in single precision like Kaldi's MelBanks: the lowest
    filters hold weights ~1e-3 that come from differences of nearby mel values, and matching
    the reference's rounding of those keeps near-silent bins within 1e-3 in the log domain.
    """
    high = cfg.high_hz  # FbankConfig checked 0 <= low_freq < high <= Nyquist
    f32 = torch.float32
    lo = 1127.0 * math.log(1.0 + cfg.low_freq / 700.0)
    hi = 1127.0 * math.log(1.0 + high / 700.0)
    delta = (hi - lo) / (cfg.num_mel_bins + 1)
    m = torch.arange(cfg.num_mel_bins, dtype=f32)[:, None]  # [M, 1]
    left, centre, right = lo + m * delta, lo + (m + 1.0) * delta, lo + (m + 2.0) * delta
    n_bins = cfg.n_fft // 2
    freq = (cfg.sample_rate / cfg.n_fft) * torch.arange(n_bins, dtype=f32)  # [n_bins]
    bin_mel = (1127.0 * torch.log(1.0 + freq / 700.0))[None]  # [1, n_bins]
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # [M, n_bins]
    return torch.cat([banks, banks.new_zeros(cfg.num_mel_bins, 1)], dim=1).T.contiguous()  # [n_bins+1, M]


def kaldi_window(cfg: FbankConfig) -> torch.Tensor:
    """The symmetric analysis window [window_size], float32.

    Taken from torch's float32 window functions (hann/hamming, povey = hann^0.85), as Kaldi
    computes its window in float: the lowest mel bins of a pre-emphasised frame can sit ~60 dB
    below the frame's energy, where a 1-ulp change of the window alone moves the log energy by
    ~4e-3, so matching the reference's rounding matters there.
    """
    n = cfg.window_size
    if cfg.window == "rectangular":
        return torch.ones(n)
    if cfg.window == "hamming":
        return torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46)
    hann = torch.hann_window(n, periodic=False)
    return hann.pow(0.85) if cfg.window == "povey" else hann


def mel_band_groups(banks: torch.Tensor, group: int = 16) -> list[tuple[int, int, int, int]]:
    """Cut the filters [F, M] into groups of `group` consecutive filters, each with the FFT-bin
    range [lo, hi) outside which all its weights are zero: (lo, hi, m0, m1) per group.

    The triangular filters are banded (each bin feeds at most two filters), so multiplying each
    group by its bin range only does ~1/6 of the dense product's work for 128 filters."""
    groups = []
    for m0 in range(0, banks.shape[1], group):
        m1 = min(m0 + group, banks.shape[1])
        rows = torch.nonzero(banks[:, m0:m1].abs().sum(1)).flatten()
        lo, hi = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 1)
        groups.append((lo, hi, m0, m1))
    return groups


class KaldiFbank(nn.Module):
    """Batched Kaldi fbank: waveforms [B, L] (or [L]) → log-mel features [B, T, M] (or [T, M]).

    T = 1 + (L - window) // shift. Runs on the waveform's device in fp32 (fp64 for fp64 input),
    with autocast disabled (bf16 would ruin the log spectrum). No learnable parameters: the
    window and the filters are buffers that follow `.to(device)`.

    Exactness vs speed: the steps before the FFT (DC removal, pre-emphasis as "x - fl(0.97·x_prev)",
    window) round exactly as the reference's do — the low mel bins of a pre-emphasised frame are
    so small that any other rounding there moves their log by up to ~4e-3. The FFT is torch's,
    as in the reference. After it the rounding is harmless (~1e-7 relative): the power is
    re² + im² (no square root), and each filter sums only its own bins.

    On the CPU (float32) the steps before and after the FFT run as two fused C loops
    (`fbank_native`, compiled on first use; bit-identical frames, tested), with torch's
    operations as the fallback (`native=False`, no C compiler, GPU, float64): there the mel
    product runs band by band on the CPU (`mel_band_groups`), as one dense product elsewhere.

    Work is cut into blocks of about `block_frames` frames (several short clips, or a slice of a
    long one); each block writes its rows of the output in place. Default: 1024 frames on the
    CPU, where a block stays in cache between passes, and 131072 elsewhere, to amortise
    launches. On the CPU with more than one torch thread, the blocks are shared among that many
    Python threads, each running torch single-threaded (the C loops and torch release the GIL).
    Measured on 2 cores (bench/fbank.py): 3.7x the clips/s of per-clip torchaudio.
    """

    def __init__(self, cfg: FbankConfig | None = None, block_frames: int | None = None,
                 native: bool = True) -> None:
        super().__init__()
        self.cfg = cfg or FbankConfig()
        self.block_frames = block_frames
        self.native = native
        banks = kaldi_mel_banks(self.cfg)  # [F, M]
        self.register_buffer("window", kaldi_window(self.cfg), persistent=False)  # [W]
        self.register_buffer("mel_banks", banks, persistent=False)  # [F, M]
        self.groups = mel_band_groups(banks)
        self.bands = fbank_native.MelBands(banks, mel_band_groups(banks, group=1))  # per filter

    def native_library(self, wave: torch.Tensor):
        """The compiled loops when they apply to `wave` (float32 on the CPU, `native` on), else None."""
        if not self.native or wave.device.type != "cpu" or wave.dtype != torch.float32:
            return None
        return fbank_native.load()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        single = wave.dim() == 1
        if single:
            wave = wave.unsqueeze(0)
        if wave.dim() != 2:
            raise ValueError(f"KaldiFbank: expected a waveform [B, L] or [L], got shape {tuple(wave.shape)}")
        if wave.shape[-1] < cfg.window_size:
            raise ValueError(f"KaldiFbank: {wave.shape[-1]} samples is shorter than one frame "
                             f"({cfg.window_size} samples)")
        dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
        cpu = wave.device.type == "cpu"
        with torch.autocast(wave.device.type, enabled=False), torch.no_grad():
            wave = wave.to(dtype).contiguous()
            n_frames = cfg.num_frames(wave.shape[-1])
            out = wave.new_empty(wave.shape[0], n_frames, cfg.num_mel_bins)  # [B, T, M]
            blocks = self._blocks(wave.shape[0], n_frames, self.block_frames or (1024 if cpu else 1 << 17))
            threads = torch.get_num_threads() if cpu else 1
            if threads > 1 and len(blocks) > 1:
                _run_threaded([lambda b=b: self._block(wave, out, *b) for b in blocks], threads)
            else:
                for b in blocks:
                    self._block(wave, out, *b)
        return out[0] if single else out

    @staticmethod
    def _blocks(n_clips: int, n_frames: int, per_block: int) -> list[tuple[int, int, int, int]]:
        """(clip0, clip1, frame0, frame1) per block: whole clips grouped up to `per_block`
        frames, or one clip's frames cut into slices of `per_block` when a clip is longer."""
        if n_frames >= per_block:
            return [(i, i + 1, t, min(t + per_block, n_frames))
                    for i in range(n_clips) for t in range(0, n_frames, per_block)]
        clips = per_block // n_frames
        return [(i, min(i + clips, n_clips), 0, n_frames) for i in range(0, n_clips, clips)]

    def _block(self, wave: torch.Tensor, out: torch.Tensor, c0: int, c1: int, t0: int, t1: int) -> None:
        """Features of clips c0:c1, frames t0:t1 of `wave` [B, L], written into `out` [B, T, M]."""
        cfg = self.cfg
        W, shift = cfg.window_size, cfg.window_shift
        lib = self.native_library(wave)
        frames = wave[c0:c1, t0 * shift:(t1 - 1) * shift + W].unfold(-1, W, shift)  # [b, t, W] (a view)
        b, T, _ = frames.shape
        buf = wave.new_empty(b, T, cfg.n_fft)  # frames zero-padded to the FFT length
        if lib is not None:
            means = frames.mean(-1) if cfg.remove_dc_offset else None  # [b, t]
            fbank_native.prepare_frames(lib, wave[c0:c1], t0, T, shift, W, cfg.n_fft, means,
                                        cfg.preemphasis, self.window.float().contiguous(), buf)
        else:
            self._prepare_frames(frames, buf)
        spectrum = torch.view_as_real(torch.fft.rfft(buf))  # [b, t, F, 2]
        mel = out[c0:c1, t0:t1].view(b * T, -1)  # [b·t, M], written in place (one clip, or whole clips)
        if lib is not None:
            fbank_native.mel_energies(lib, spectrum.view(b * T, -1, 2), self.bands, mel)
        else:
            self._mel_energies(spectrum.view(b * T, -1, 2), mel)
        if wave.device.type == "cpu":
            values = mel.numpy()  # numpy's log is ~2.5x faster than torch's on the CPU
            np.maximum(values, FLOAT_EPS, out=values)
            np.log(values, out=values)
        else:
            mel.clamp_(min=FLOAT_EPS).log_()

    def _prepare_frames(self, frames: torch.Tensor, buf: torch.Tensor) -> None:
        """The torch form of fbank_native.prepare_frames: frames [b, t, W] → buf [b, t, n_fft]."""
        cfg = self.cfg
        W = cfg.window_size
        buf[..., W:] = 0
        y = buf[..., :W]
        if cfg.remove_dc_offset:
            torch.sub(frames, frames.mean(-1, keepdim=True), out=y)
        else:
            y.copy_(frames)
        if cfg.preemphasis:
            scaled = y[..., :-1] * cfg.preemphasis  # fl(p·x_{j-1}), from the values before the update
            y[..., 0:1] -= scaled[..., 0:1]  # the first sample's predecessor is itself
            y[..., 1:] -= scaled
        y *= self.window.to(buf.dtype)

    def _mel_energies(self, spectrum: torch.Tensor, mel: torch.Tensor) -> None:
        """The torch form of fbank_native.mel_energies: spectrum [rows, F, 2] → mel [rows, M]."""
        squares = spectrum.square()  # re², im²
        power = squares[..., 0] + squares[..., 1]  # [rows, F]
        banks = self.mel_banks.to(power.dtype)
        if power.device.type == "cpu":  # banded product: each group of filters times its bin range
            for lo, hi, m0, m1 in self.groups:
                torch.mm(power[:, lo:hi], banks[lo:hi, m0:m1], out=mel[:, m0:m1])
        else:
            torch.mm(power, banks, out=mel)


def _run_threaded(tasks: list, threads: int) -> None:
    """Run `tasks` (callables) on `threads` Python threads with torch single-threaded meanwhile."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
            for future in [pool.submit(task) for task in tasks]:
                future.result()
    finally:
        torch.set_num_threads(previous)


def reference_fbank(wave: torch.Tensor, cfg: FbankConfig | None = None) -> torch.Tensor:
    """torchaudio.compliance.kaldi.fbank of one waveform [L] with `cfg` (AST's call): [T, M]."""
    import torchaudio.compliance.kaldi as kaldi

    cfg = cfg or FbankConfig()
    return kaldi.fbank(
        wave.reshape(1, -1), sample_frequency=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins,
        frame_length=cfg.frame_length_ms, frame_shift=cfg.frame_shift_ms, low_freq=cfg.low_freq,
        high_freq=cfg.high_freq, preemphasis_coefficient=cfg.preemphasis,
        remove_dc_offset=cfg.remove_dc_offset, window_type=cfg.window, dither=0.0,
        use_energy=False, htk_compat=True)
