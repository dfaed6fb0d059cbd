"""The WKV CUDA kernels (``wkv_cuda.cu``): lazy build, autograd Function and entry points.

``wkv_cuda(r, k, v, w, u, state)`` has the contract of `rwkv_mm.kernels.wkv.wkv` (r, k, v, w
[B, T, H, N] with ``w`` the log decay, u [H, N], state [B, H, N, N] fp32 key-first) for CUDA
tensors with head size N in `HEAD_SIZES` and fp32 / fp16 / bf16 inputs; all math and the state
are fp32. Gradients flow to r, k, v, w, u and the initial state, and a gradient of the final
state is accepted, so a long sequence can be trained in segments.

Eagle (RWKV-5) and Finch (RWKV-6) share the kernel: Eagle's static decay is passed as a broadcast
view ``w[None, None].expand(B, T, H, N)`` and read through its zero strides (no copy; its gradient
comes back full-size and autograd's expand sums it). r, k, v and w may be any strided views with
unit channel stride (e.g. slices of a fused projection); w may be fp32 while r, k, v are 16-bit.

The extension is compiled on first use with `torch.utils.cpp_extension.load` (ninja), once per
head size, from the sources next to this module, and cached by torch in its extensions directory
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions/<py>_<cu>``) -- but only where no
other user can write (`native_cache.private_dir`: the folder is this user's and not
group/world-writable, and so is the path to it); else it is built in a private temp folder for
this process, so a library planted in a shared cache is never loaded. Anything that makes a build
impossible (a CPU-only torch, no CUDA toolkit, no ninja, a compile error) raises `WkvBuildError`
naming the cause.

This module only runs the kernels and says what they cover (`kernels_cover`); it never falls back.
Choosing them -- or the chunked form when they don't cover the inputs or can't be built (warned
once) -- is the dispatcher's job (`rwkv_mm.kernels.wkv.choose_wkv_impl`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import native_cache
from .contract import check_wkv_inputs, compute_dtype, empty_sequence_result
from .kernel_args import KERNEL_DTYPES, channels_dense, kernel_dtype, upstream_grads

__all__ = [
    "HEAD_SIZES",
    "KERNEL_DTYPES",
    "WkvBuildError",
    "build",
    "find_cuda_home",
    "kernels_cover",
    "load_extension",
    "wkv_cuda",
]

#: Head sizes the kernels are written for (one build each).
HEAD_SIZES = (32, 64, 128)
#: Sources, relative to this module's folder (the header is found through the include path).
SOURCES = ("wkv_cuda.cpp", "wkv_cuda.cu")
SOURCE_DIR = Path(__file__).resolve().parent
_WHAT = "the WKV CUDA kernels"

_builds: dict[tuple[Any, ...], Any] = {}


class WkvBuildError(RuntimeError):
    """The WKV CUDA extension cannot be built or loaded here; the message says what is missing."""


def kernels_cover(dtypes: Iterable[torch.dtype], head_size: int, seq_len: int) -> bool:
    """Whether the kernels are written for these inputs: every dtype of r, k, v, w in
    `KERNEL_DTYPES`, head size in `HEAD_SIZES`, and a non-empty sequence. Says nothing about
    whether they can be built here (`build` raises `WkvBuildError` when not)."""
    return head_size in HEAD_SIZES and seq_len > 0 and all(dt in KERNEL_DTYPES for dt in dtypes)


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------
def _is_cuda_home(path: str | os.PathLike[str] | None) -> bool:
    if not path:
        return False
    p = Path(path)
    return (p / "bin" / "nvcc").is_file() and (p / "include" / "cuda_runtime.h").is_file()


def find_cuda_home() -> Path | None:
    """The CUDA toolkit root: $CUDA_HOME, $CUDA_PATH, torch's guess, then /usr/local/cuda.

    A candidate counts only if it has ``bin/nvcc`` and ``include/cuda_runtime.h`` -- torch guesses
    from the ``nvcc`` on PATH, which is wrong when that is a wrapper script (e.g. /usr/local/bin).
    """
    from torch.utils import cpp_extension

    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for c in candidates:
        if _is_cuda_home(c):
            return Path(c)  # type: ignore[arg-type]
    return None


def _arch_flags(arch: Sequence[str] | None) -> list[str]:
    """nvcc -gencode flags: the given compute capabilities ("90", "8.0"), else TORCH_CUDA_ARCH_LIST
    (left to torch), else the current GPU."""
    if arch:
        nums = [a.replace(".", "") for a in arch]
        return [f"-gencode=arch=compute_{n},code=sm_{n}" for n in nums]
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return []
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return [f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"]
    raise WkvBuildError(
        "no GPU is visible to choose the target architecture: pass arch=('90',) to build() "
        "or set TORCH_CUDA_ARCH_LIST"
    )


def _ensure_ninja() -> None:
    """Put the pip ``ninja`` package's binary on PATH when no ninja is there (e.g. a venv's python
    run without activating the venv)."""
    if shutil.which("ninja"):
        return
    try:
        import ninja  # type: ignore[import-not-found]

        bin_dir = ninja.BIN_DIR
    except (ImportError, AttributeError) as e:
        raise WkvBuildError("ninja is not installed (pip install ninja): torch needs it to build extensions") from e
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def default_build_directory(name: str) -> Path:
    """Where torch would build extension `name`: ``$TORCH_EXTENSIONS_DIR/<name>``, else
    ``<torch's build root>/py<XY>_cu<ZZ>/<name>`` (torch's own layout, so old builds are reused)."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        py = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        cu = f"cu{(torch.version.cuda or '').replace('.', '')}"
        root = os.path.join(cpp_extension.get_default_build_root(), f"{py}_{cu}")
    return Path(root) / name


def build_directory_for(name: str, requested: str | os.PathLike[str] | None) -> Path:
    """The folder ninja builds `name` in: `requested` (default: `default_build_directory`) when
    only this user can write it and the path to it, else a private temp folder for this process.

    Raises:
        WkvBuildError: not even a private temp folder can be had.
    """
    wanted = Path(requested) if requested is not None else default_build_directory(name)
    folder = native_cache.private_dir(wanted, f"the WKV CUDA kernels ({name})")
    if folder is None:
        raise WkvBuildError(f"no private folder to build the WKV CUDA kernels in ({wanted} is not safe)")
    if folder != wanted:  # the process's temp folder: one subfolder per build
        folder = folder / name
        folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def build(
    head_size: int = 64,
    *,
    arch: Sequence[str] | None = None,
    fast: bool = False,
    defines: Sequence[str] = (),
    build_directory: str | os.PathLike[str] | None = None,
    verbose: bool = False,
) -> Any:
    """Compile (or load from torch's cache) the extension for one head size. One process can
    load one build per name (torch ops namespaces are global): the name encodes the head size,
    ``fast``, ``arch`` and ``defines``. A compile error's message includes the compiler output.

    Args:
        head_size: N, one of `HEAD_SIZES`.
        arch: compute capabilities to compile for, e.g. ``("90",)``; default: TORCH_CUDA_ARCH_LIST,
            else the current GPU. Needed when no GPU is visible (the compile test).
        fast: instantiate bf16 only (``-DWKV_FAST_BUILD``), for the compile test.
        defines: extra preprocessor definitions, e.g. ``("WKV_STAGE_STEPS=32",)`` to try the
            tuning knobs at the top of wkv_cuda.cu (each set gets its own build and name).
        build_directory: where ninja builds; default: torch's extensions directory. Either is
            used only when no other user can write it (else a private temp folder).
        verbose: show the compiler commands.

    Returns:
        The ops namespace ``torch.ops.rwkv_mm_wkv_n<N>...``: ``forward``, ``backward``, ``head_size``
        (see wkv_cuda.cpp for their schemas).

    Raises:
        ValueError: head_size is not supported.
        WkvBuildError: a CPU-only torch, no CUDA toolkit, no ninja, or a compile error.
    """
    return load_extension("rwkv_mm_wkv", SOURCES, HEAD_SIZES, head_size, _WHAT, arch=arch,
                          fast=fast, defines=defines, build_directory=build_directory, verbose=verbose)


def load_extension(
    prefix: str,
    sources: Sequence[str],
    head_sizes: Sequence[int],
    head_size: int,
    what: str,
    *,
    arch: Sequence[str] | None = None,
    fast: bool = False,
    defines: Sequence[str] = (),
    build_directory: str | os.PathLike[str] | None = None,
    verbose: bool = False,
) -> Any:
    """`build` for any kernel family whose sources lie next to this module (WKV, WKV-7): compiled
    with ``-DWKV_N=<head_size>`` (and ``-DWKV_FAST_BUILD`` when ``fast``) as the torch ops library
    ``<prefix>_n<N>[_fast][_sm..][_<hash of defines>]``; ``what`` names the kernels in errors.
    Arguments, result and errors otherwise as `build`."""
    if head_size not in head_sizes:
        raise ValueError(f"head size {head_size} is not supported by {what}; use one of {tuple(head_sizes)}")
    key = (prefix, head_size, tuple(arch or ()), fast, tuple(defines), str(build_directory or ""))
    if key in _builds:
        return _builds[key]
    if torch.version.cuda is None:
        raise WkvBuildError(f"torch {torch.__version__} is a CPU-only build: {what} need a CUDA build of torch")
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise WkvBuildError(
            "no CUDA toolkit found (bin/nvcc and include/cuda_runtime.h under $CUDA_HOME, $CUDA_PATH, "
            "torch's guess or /usr/local/cuda): install it or set CUDA_HOME to its root, e.g. /usr/local/cuda"
        )
    from torch.utils import cpp_extension

    # torch read CUDA_HOME once, at import; point it at the toolkit found above.
    cpp_extension.CUDA_HOME = str(cuda_home)
    _ensure_ninja()
    flags = [f"-DWKV_N={head_size}"] + (["-DWKV_FAST_BUILD"] if fast else []) + [f"-D{d}" for d in defines]
    arch_flags = _arch_flags(arch)
    name = f"{prefix}_n{head_size}" + ("_fast" if fast else "")
    if arch:
        name += "_sm" + "_".join(a.replace(".", "") for a in arch)
    if defines:
        name += "_" + hashlib.sha1(" ".join(defines).encode()).hexdigest()[:8]
    folder = build_directory_for(name, build_directory)
    try:
        # is_python_module=False: the library registers torch ops (TORCH_LIBRARY) and is loaded
        # with torch.ops.load_library; no pybind11, so it compiles much faster.
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE_DIR / s) for s in sources],
            extra_include_paths=[str(SOURCE_DIR)],
            extra_cflags=["-O3", *flags],
            extra_cuda_cflags=["-O3", "-std=c++17", *flags, *arch_flags],
            build_directory=str(folder),
            verbose=verbose,
            is_python_module=False,
        )
        ops = getattr(torch.ops, name)
        built_for = ops.head_size()
    except Exception as e:  # torch raises RuntimeError / OSError / CalledProcessError
        raise WkvBuildError(f"building {what} (head size {head_size}) failed: {e}") from e
    if built_for != head_size:
        raise WkvBuildError(f"the library {name} was built for head size {built_for}, not {head_size}")
    _builds[key] = ops
    return ops


# --------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------
class WkvFunction(torch.autograd.Function):
    """WKV through kernel ops (``forward``/``backward`` as in wkv_cuda.cpp; the backward's
    d(initial state) is an empty tensor when there is no initial state).

    Inputs are already prepared by `_apply`: r, k, v of one kernel dtype, w of that dtype or fp32,
    unit channel stride; u [H, N] and the state fp32 contiguous.
    """

    @staticmethod
    def forward(ctx: Any, r, k, v, w, u, state, ext):  # type: ignore[override]
        y, s_out = ext.forward(r, k, v, w, u, state)  # [B, T, H, N], [B, H, N, N]
        ctx.ext = ext
        ctx.has_state = state is not None
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(r, k, v, w, u, state, s_out)
        return y, s_out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor | None, ds_out: torch.Tensor | None):  # type: ignore[override]
        r, k, v, w, u, state, s_out = ctx.saved_tensors
        dy, ds_out = upstream_grads(dy, ds_out, r)
        dr, dk, dv, dw, du_part, ds0 = ctx.ext.backward(r, k, v, w, u, state, s_out, dy, ds_out)
        du = du_part.sum(0)  # [H, N]
        return dr, dk, dv, dw, du, (ds0 if ctx.has_state else None), None


def _apply(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None,
    ext: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cast / restride the inputs for the kernels (differentiably) and run `WkvFunction`."""
    out_dtype = r.dtype
    dt = kernel_dtype(_WHAT, r, k, v)
    rr, kk, vv = (channels_dense(x, dt) for x in (r, k, v))  # [B, T, H, N]
    ww = channels_dense(w, w.dtype if w.dtype in (dt, torch.float32) else torch.float32)
    uu = u.float().contiguous()  # [H, N]
    ss = None if state is None else state.float().contiguous()  # [B, H, N, N]
    y, s_out = WkvFunction.apply(rr, kk, vv, ww, uu, ss, ext)
    return y.to(out_dtype), s_out


def wkv_cuda(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV with the CUDA kernels (building them on first use).

    Args:
        r, k, v, w: [B, T, H, N] CUDA tensors, fp32 / fp16 / bf16, N in `HEAD_SIZES`; ``w`` is the
            log decay (<= 0) and may be a broadcast view.
        u: [H, N] bonus for the current token.
        state: optional [B, H, N, N] initial state (key index first); None means zeros.

    Returns:
        ``(y, state_out)``: y [B, T, H, N] in ``r``'s dtype, state_out [B, H, N, N] fp32.

    Raises:
        WkvInputError: an input breaks the contract (`rwkv_mm.kernels.contract`).
        ValueError: a device, dtype or head size the kernels don't take.
        WkvBuildError: the extension cannot be built here.
    """
    check_wkv_inputs(r, k, v, w, u, state)
    tensors = [x for x in (r, k, v, w, u, state) if x is not None]
    if not all(x.is_cuda and x.device == r.device for x in tensors):
        raise ValueError("wkv_cuda needs all tensors on one CUDA device")
    kernel_dtype(_WHAT, r, k, v)
    if r.shape[1] == 0:
        return empty_sequence_result(r, state, compute_dtype(r, k, v, w, u, state))
    ext = build(r.shape[-1])
    with torch.cuda.device(r.device):
        return _apply(r, k, v, w, u, state, ext)

