"""Run the WKV and WKV-7 CUDA kernels' own source on the CPU (tests only).

`build_emulated(N)` compiles cuda/wkv_cuda.cu with g++ against emulate/cuda_emulate.h (blocks run
one after another, the threads of a block are fibers that switch at barriers) and returns an
object with the binding's ``forward`` / ``backward`` (wkv_cuda.cpp), taking CPU tensors. It plugs
into `rwkv_mm.kernels.wkv_cuda._apply`, so the autograd Function and the argument preparation are
exercised too. `build_emulated7(N)` does the same for cuda/wkv7_cuda.cu (binding: wkv7_cuda.cpp,
autograd: `rwkv_mm.kernels.wkv7_cuda._apply7`). Slow (thousands of fiber switches per time step):
keep B*H*T small.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
CUDA_DIR = REPO / "cuda"
EMU_DIR = Path(__file__).resolve().parent / "emulate"
_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class WkvSeq(ctypes.Structure):
    """Mirror of ``WkvSeq`` in wkv_cuda.h."""

    _fields_ = [("ptr", ctypes.c_void_p), ("sb", ctypes.c_int64), ("st", ctypes.c_int64), ("sh", ctypes.c_int64)]


def _seq(x: torch.Tensor) -> WkvSeq:
    assert x.stride(3) == 1
    return WkvSeq(x.data_ptr(), x.stride(0), x.stride(1), x.stride(2))


def _ptr(x: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if x is None else x.data_ptr())


def compiler() -> str | None:
    """The C++ compiler used for the emulation, or None."""
    return shutil.which("g++")


class EmulatedWkv:
    """``forward`` / ``backward`` of wkv_cuda.cpp on CPU tensors, through the emulated kernels."""

    def __init__(self, lib_path: Path, head_size: int) -> None:
        self.lib = ctypes.CDLL(str(lib_path))
        self.head_size = head_size
        assert self.lib.emu_wkv_head_size() == head_size
        self.lib.emu_wkv_forward.restype = ctypes.c_int
        self.lib.emu_wkv_backward.restype = ctypes.c_int

    def forward(self, r, k, v, w, u, s0):
        B, T, H, N = r.shape
        y = torch.empty(B, T, H, N, dtype=r.dtype)
        s_out = torch.empty(B, H, N, N)
        status = self.lib.emu_wkv_forward(
            _DTYPE_CODE[r.dtype], _DTYPE_CODE[w.dtype], B, T, H, _seq(r), _seq(k), _seq(v), _seq(w),
            _ptr(u), _ptr(s0), _ptr(y), _ptr(s_out),
        )
        assert status == 0, status
        return y, s_out

    def backward(self, r, k, v, w, u, s0, s_out, dy, ds_out):
        B, T, H, N = r.shape
        dr, dk, dv = (torch.empty(B, T, H, N, dtype=r.dtype) for _ in range(3))
        dw = torch.empty(B, T, H, N, dtype=w.dtype)
        acc = dw if w.dtype == torch.float32 else torch.empty(B, T, H, N)
        du_part = torch.empty(B, H, N)
        ds0 = None if s0 is None else torch.empty(B, H, N, N)
        status = self.lib.emu_wkv_backward(
            _DTYPE_CODE[r.dtype], _DTYPE_CODE[w.dtype], B, T, H, _seq(r), _seq(k), _seq(v), _seq(w),
            _ptr(u), _ptr(s0), _ptr(s_out), _seq(dy), _ptr(ds_out), _ptr(dr), _ptr(dk), _ptr(dv), _ptr(dw),
            _ptr(acc), _ptr(du_part), _ptr(ds0),
        )
        assert status == 0, status
        return dr, dk, dv, dw, du_part, ds0


class EmulatedWkv7:
    """``forward`` / ``backward`` of wkv7_cuda.cpp on CPU tensors, through the emulated kernels."""

    def __init__(self, lib_path: Path, head_size: int) -> None:
        self.lib = ctypes.CDLL(str(lib_path))
        self.head_size = head_size
        assert self.lib.emu_wkv7_head_size() == head_size
        self.lib.emu_wkv7_forward.restype = ctypes.c_int
        self.lib.emu_wkv7_backward.restype = ctypes.c_int
        self.lib.emu_wkv7_scratch_floats.restype = ctypes.c_size_t

    def forward(self, r, w, k, v, a, b, s0):
        B, T, H, N = r.shape
        y = torch.empty(B, T, H, N, dtype=r.dtype)
        s_out = torch.empty(B, H, N, N)
        status = self.lib.emu_wkv7_forward(
            _DTYPE_CODE[r.dtype], _DTYPE_CODE[w.dtype], B, T, H, *(_seq(x) for x in (r, w, k, v, a, b)),
            _ptr(s0), _ptr(y), _ptr(s_out),
        )
        assert status == 0, status
        return y, s_out

    def backward(self, r, w, k, v, a, b, s0, dy, ds_out):
        B, T, H, N = r.shape
        dr, dk, dv, da, db = (torch.empty(B, T, H, N, dtype=r.dtype) for _ in range(5))
        dw = torch.empty(B, T, H, N, dtype=w.dtype)
        ds0 = torch.empty(B if s0 is not None else 0, H, N, N)
        scratch = torch.full((self.lib.emu_wkv7_scratch_floats(B, T, H),), float("nan"))  # no stale reads
        status = self.lib.emu_wkv7_backward(
            _DTYPE_CODE[r.dtype], _DTYPE_CODE[w.dtype], B, T, H, *(_seq(x) for x in (r, w, k, v, a, b)),
            _ptr(s0), _seq(dy), _ptr(ds_out), *(_ptr(x) for x in (dr, dw, dk, dv, da, db)),
            _ptr(None if s0 is None else ds0), _ptr(scratch),
        )
        assert status == 0, status
        return dr, dw, dk, dv, da, db, ds0


_cache: dict[tuple[str, int], object] = {}


def _compile(stem: str, cu: str, shim: str, headers: tuple[str, ...], head_size: int) -> Path:
    """g++-compile cuda/<cu> with emulate/<shim> into a cached library (keyed by the sources' hash)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no g++ to compile the emulated kernels")
    sources = (CUDA_DIR / cu, *(CUDA_DIR / h for h in headers), EMU_DIR / "cuda_emulate.h", EMU_DIR / shim)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    out_dir = Path(tempfile.gettempdir()) / "rwkv_mm_wkv_emulate" / digest
    lib = out_dir / f"lib{stem}_emu_n{head_size}.so"
    if not lib.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{id(lib)}.tmp")
        cmd = [
            cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-DWKV_EMULATE", f"-DWKV_N={head_size}",
            "-include", str(EMU_DIR / "cuda_emulate.h"), f"-I{CUDA_DIR}",
            "-x", "c++", str(CUDA_DIR / cu), str(EMU_DIR / shim), "-o", str(tmp),
        ]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        tmp.replace(lib)
    return lib


def build_emulated(head_size: int) -> EmulatedWkv:
    """Compile (cached by source hash in the temp folder) and load the emulated WKV kernels."""
    key = ("wkv", head_size)
    if key not in _cache:
        lib = _compile("wkv", "wkv_cuda.cu", "shim.cpp", ("wkv_cuda.h", "wkv_device.cuh"), head_size)
        _cache[key] = EmulatedWkv(lib, head_size)
    return _cache[key]  # type: ignore[return-value]


def build_emulated7(head_size: int) -> EmulatedWkv7:
    """Compile (cached by source hash in the temp folder) and load the emulated WKV-7 kernels."""
    key = ("wkv7", head_size)
    if key not in _cache:
        headers = ("wkv7_cuda.h", "wkv_cuda.h", "wkv_device.cuh")
        _cache[key] = EmulatedWkv7(_compile("wkv7", "wkv7_cuda.cu", "shim7.cpp", headers, head_size), head_size)
    return _cache[key]  # type: ignore[return-value]
