"""Run the WKV CUDA kernels' own source on the CPU (tests only).

`build_emulated(N)` compiles cuda/wkv_cuda.cu with g++ against emulate/cuda_emulate.h (blocks run
one after another, the threads of a block are fibers that switch at barriers) and returns an
object with the binding's ``forward`` / ``backward`` (wkv_cuda.cpp), taking CPU tensors. It plugs
into `rwkv_mm.kernels.wkv_cuda._apply`, so the autograd Function and the argument preparation are
exercised too. Slow (thousands of fiber switches per time step): keep B*H*T small.
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
_SOURCES = (CUDA_DIR / "wkv_cuda.cu", CUDA_DIR / "wkv_cuda.h", CUDA_DIR / "wkv_device.cuh", EMU_DIR / "cuda_emulate.h",
            EMU_DIR / "shim.cpp")
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


_cache: dict[int, EmulatedWkv] = {}


def build_emulated(head_size: int) -> EmulatedWkv:
    """Compile (cached by source hash in the temp folder) and load the emulated kernels."""
    if head_size in _cache:
        return _cache[head_size]
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no g++ to compile the emulated kernels")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES)).hexdigest()[:16]
    out_dir = Path(tempfile.gettempdir()) / "rwkv_mm_wkv_emulate" / digest
    lib = out_dir / f"libwkv_emu_n{head_size}.so"
    if not lib.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{id(lib)}.tmp")
        cmd = [
            cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-DWKV_EMULATE", f"-DWKV_N={head_size}",
            "-include", str(EMU_DIR / "cuda_emulate.h"), f"-I{CUDA_DIR}",
            "-x", "c++", str(CUDA_DIR / "wkv_cuda.cu"), str(EMU_DIR / "shim.cpp"), "-o", str(tmp),
        ]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        tmp.replace(lib)
    _cache[head_size] = EmulatedWkv(lib, head_size)
    return _cache[head_size]
