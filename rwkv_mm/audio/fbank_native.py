"""The fbank's fused CPU loops (fbank_native.c), compiled on first use and called through ctypes.

`load()` compiles the C file with the system C compiler (`cc`, or `$CC`) into a cache folder
(`$RWKV_MM_CACHE` or ~/.cache/rwkv_mm), loads it, and returns the library, or None when there is
no compiler, the build fails, or `RWKV_MM_NATIVE_FBANK=0`; the fbank then uses its torch path
(same numbers, slower). `-ffp-contract=off` keeps every float operation rounded on its own (no
fused multiply-add), as the exact pre-FFT steps need. The calls release the GIL (ctypes.CDLL), so
several Python threads can run them at once.

Nothing another user could have written is loaded (`rwkv_mm.kernels.native_cache`): the cache
folder must be this user's and not group/world-writable (else the library is built in a private
temp folder for this process); the library's name hashes the source, the compiler (path and
`--version`) and the flags; and a cached library is loaded only when its SHA-256 matches the
digest written beside it at build time (else it is rebuilt).
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

from rwkv_mm.kernels import native_cache

SOURCE = Path(__file__).with_name("fbank_native.c")
FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def cache_dir() -> Path:
    """Where built libraries are kept (when only this user can write there)."""
    return Path(os.environ.get("RWKV_MM_CACHE") or Path.home() / ".cache" / "rwkv_mm")


def _compiler() -> tuple[str, str] | None:
    """(path to run, identity: path, real path and `--version`) of `$CC`, `cc` or `gcc`."""
    name = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    return native_cache.tool_fingerprint(name) if name else None


def library_name(compiler_identity: str) -> str:
    """The cached library's file name: a hash of the source, the compiler and the flags."""
    key = b"\0".join([SOURCE.read_bytes(), compiler_identity.encode(), " ".join(FLAGS).encode()])
    return f"fbank_native_{hashlib.sha256(key).hexdigest()[:16]}.so"


def _build_and_load(compiler: str, target: Path) -> ctypes.CDLL | None:
    """Compile into a temp folder beside `target`, load that file, then publish it (with its
    digest) as `target` for later processes. None when the compile fails."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # mode 0700
        built = Path(tmp) / target.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return None
        lib = _bind(ctypes.CDLL(str(built)))
        try:
            native_cache.publish(built, target)
        except OSError:
            pass  # loaded already; the next process builds again
    return lib


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
        compiler = _compiler()
        folder = native_cache.private_dir(cache_dir(), "the fbank's C loops") if compiler else None
        if compiler is None or folder is None:
            return None
        target = folder / library_name(compiler[1])
        try:
            if native_cache.verified(target):
                _lib = _bind(ctypes.CDLL(str(target)))
            else:
                _lib = _build_and_load(compiler[0], target)
        except (OSError, AttributeError):  # a library that cannot be loaded or lacks the symbols
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
