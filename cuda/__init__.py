"""WKV operators: one public op, the one dispatcher that picks its implementation, and the
implementations side by side under one contract (reference, chunked, step, CUDA).

Installed as ``rwkv_mm.kernels`` (sources live in the top-level ``cuda/`` folder). Modules:

    contract           the contract check and dtype rules every implementation calls first
    wkv                ``wkv`` / ``wkv_step`` and `choose_wkv_impl` (the one dispatch)
    wkv_reference      plain loop over time (the truth the others are tested against)
    wkv_chunked        chunked, parallel-in-time PyTorch form
    wkv_recurrent      the decode step, alone (``wkv_step``) or per token over a sequence
    wkv_cuda           the CUDA kernels (lazy build; never falls back itself)
    wkv_bidirectional  the non-causal op for encoders (two ``wkv`` scans)
    wkv7_*             WKV-7 (Goose), the same layout: wkv7_reference, wkv7_chunked,
                       wkv7_recurrent, wkv7_cuda (wkv7_cuda.cu; build shared with wkv_cuda);
                       its public op is ``wkv.wkv7`` (the "wkv7" family of the one dispatch)
    native_cache       private build folders for native code

The ops are imported from their modules (``from rwkv_mm.kernels.wkv import wkv``): the package
does not re-export a function under a name that is also a module's (``wkv``, ``wkv_cuda``...).
Public names are resolved lazily (PEP 562): importing this package imports nothing, not even
torch. That matters beyond speed: run from the repository root, ``cuda/`` is importable as a
top-level ``cuda`` package, which torch probes (``cuda.bindings``) while it is being imported.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module (in this package) that defines it.
_EXPORTS = {
    "WkvInputError": "contract",
    "check_wkv_inputs": "contract",
    "check_wkv7_inputs": "contract",
    "compute_dtype": "contract",
    "empty_sequence_result": "contract",
    "WKV_IMPLS": "wkv",
    "WKV7_IMPLS": "wkv",
    "WKV_FAMILIES": "wkv",
    "wkv7_step": "wkv7_recurrent",
    "wkv7_cuda_or_fallback": "wkv",
    "choose_wkv_impl": "wkv",
    "wkv_cuda_or_fallback": "wkv",
    "wkv_step": "wkv_recurrent",
    "HEAD_SIZES": "wkv_cuda",
    "KERNEL_DTYPES": "wkv_cuda",
    "WkvBuildError": "wkv_cuda",
    "kernels_cover": "wkv_cuda",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
