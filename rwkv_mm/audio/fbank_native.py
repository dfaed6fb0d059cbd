"""The fbank's fused CPU loops (fbank_native.c), compiled on first use and called through ctypes.

`load()` compiles the C file with the system C compiler (`cc`, or `$CC`) into a cache folder
(`$RWKV_MM_CACHE` or ~/.cache/rwkv_mm) named by the source's hash, loads it, and returns the
library, or None when there is no compiler, the build fails, or `RWKV_MM_NATIVE_FBANK=0`; the
fbank then uses its torch path (same numbers, slower). `-ffp-contract=off` keeps every float
operation rounded on its own (no fused multiply-add), as the exact pre-FFT steps need. The
calls release the GIL (ctypes.CDLL), so several Python threads can run them at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fbank_native.c")
FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def cache_dir() -> Path:
    """Where built libraries are kept."""
    return Path(os.environ.get("RWKV_MM_CACHE") or Path.home() / ".cache" / "rwkv_mm")


def _build(target: Path) -> bool:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # atomic: build, then rename
        built = Path(tmp) / target.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return False
        os.replace(built, target)
    return True


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.fbank_prepare_frames.argtypes = [ptr, i64, i64, i64, i64, i64, i64, ptr, f32, ptr, ptr]
    lib.fbank_prepare_frames.restype = None
    lib.fbank_mel_energies.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64]
    lib.fbank_mel_energies.restype = None
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled library, or None where it cannot be had (see the module docstring)."""
    global _lib, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("RWKV_MM_NATIVE_FBANK", "1") == "0":
            return None
        digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
        target = cache_dir() / f"fbank_native_{digest}.so"
        try:
            if not target.exists() and not _build(target):
                return None
            _lib = _bind(ctypes.CDLL(str(target)))
        except OSError:
            _lib = None
        return _lib


class MelBands:
    """The mel filters [F, M] in the C loops' banded form: per filter its bin range and weights.

    `ranges`: (lo, hi, m, m + 1) per filter m, as `fbank.mel_band_groups(banks, group=1)` gives.
    """

    def __init__(self, banks: torch.Tensor, ranges: list[tuple[int, int, int, int]]) -> None:
        banks = banks.detach().to(torch.float32).cpu()
        self.n_bins, self.n_mel = banks.shape
        if [m0 for _, _, m0, _ in ranges] != list(range(self.n_mel)):
            raise ValueError(f"MelBands: expected one range per filter (0 .. {self.n_mel - 1})")
        lengths = [hi - lo for lo, hi, _, _ in ranges]
        self.lo = torch.tensor([lo for lo, _, _, _ in ranges], dtype=torch.int32)
        self.hi = torch.tensor([hi for _, hi, _, _ in ranges], dtype=torch.int32)
        self.offset = torch.tensor([0, *lengths[:-1]], dtype=torch.int64).cumsum(0)
        self.weights = torch.cat([banks[lo:hi, m] for lo, hi, m, _ in ranges]).contiguous()


def prepare_frames(lib: ctypes.CDLL, wave: torch.Tensor, t0: int, n_frames: int, shift: int,
                   win: int, n_fft: int, means: torch.Tensor | None, preemph: float,
                   window: torch.Tensor, out: torch.Tensor) -> None:
    """Frames t0 … t0+n_frames-1 of each row of `wave` [b, L] (float32, unit stride) into `out`
    [b·n_frames, n_fft] (contiguous); `means` [b, n_frames] contiguous, or None."""
    assert wave.dtype == torch.float32 and wave.stride(-1) == 1 and out.is_contiguous()
    lib.fbank_prepare_frames(
        wave.data_ptr() + 4 * t0 * shift, wave.stride(0), wave.shape[0], n_frames, shift, win,
        n_fft, None if means is None else means.data_ptr(), preemph, window.data_ptr(),
        out.data_ptr())


def mel_energies(lib: ctypes.CDLL, spectrum: torch.Tensor, bands: MelBands, out: torch.Tensor) -> None:
    """Mel energies of `spectrum` [rows, F, 2] (contiguous) into `out` [rows, M] (unit column stride)."""
    assert spectrum.is_contiguous() and out.stride(-1) == 1 and spectrum.shape[1] == bands.n_bins
    lib.fbank_mel_energies(
        spectrum.data_ptr(), spectrum.shape[0], bands.n_bins, bands.n_mel, bands.lo.data_ptr(),
        bands.hi.data_ptr(), bands.offset.data_ptr(), bands.weights.data_ptr(), out.data_ptr(),
        out.stride(0))
