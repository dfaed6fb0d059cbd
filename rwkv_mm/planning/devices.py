"""What a run needs to know about its accelerator: dense bf16 peak FLOPs of common GPUs (for MFU)
and the peak memory a process has used (CUDA allocator or the process's resident set).

Nothing here touches a device at import time.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

#: Dense (no sparsity) bf16 tensor-core peak, in TFLOP/s, of the GPUs training runs usually get,
#: from the vendors' data sheets (SXM parts; PCIe parts are listed when they differ). A name
#: matches when every word of the key occurs in `torch.cuda.get_device_name()` (case-insensitive);
#: the longest matching key wins (so "h100 pcie" beats "h100").
PEAK_TFLOPS: dict[str, float] = {
    "b200": 2250.0,
    "b100": 1750.0,
    "gh200": 989.0,
    "h200": 989.0,
    "h100": 989.0,
    "h100 pcie": 756.0,
    "h800": 989.0,
    "a100": 312.0,
    "a800": 312.0,
    "l40s": 362.0,
    "l40": 181.0,
    "l4": 121.0,
    "a10g": 70.0,
    "a10": 125.0,
    "a6000": 155.0,
    "rtx 4090": 165.0,
    "rtx 3090": 71.0,
    "v100": 125.0,  # fp16 (V100 has no bf16)
    "t4": 65.0,  # fp16
    "mi300x": 1307.0,
    "mi250x": 383.0,
}


def lookup_peak_tflops(device_name: str) -> float | None:
    """The `PEAK_TFLOPS` entry whose words all occur among the words of `device_name` ("-" splits
    words too: "NVIDIA A100-SXM4-80GB"), the longest such key first; None when none matches."""
    words = set(device_name.lower().replace("-", " ").split())
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if set(key.split()) <= words:
            return PEAK_TFLOPS[key]
    return None


def device_peak_tflops(device: torch.device, given: float = 0.0) -> float | None:
    """Peak TFLOP/s of `device` for MFU: `given` (train.peak_tflops, > 0) when set, else the table's
    entry for a CUDA device's name; None when unknown (a CPU without `given`)."""
    if given and given > 0:
        return float(given)
    if device.type == "cuda" and torch.cuda.is_available():
        return lookup_peak_tflops(torch.cuda.get_device_name(device))
    return None


def _proc_status_bytes(key: str) -> int | None:
    """A `VmHWM:`/`VmRSS:` line of /proc/self/status in bytes (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since the last `reset_peak_memory`: on CUDA what the caching allocator handed
    out (`torch.cuda.max_memory_allocated`), elsewhere the process's peak resident set (VmHWM on
    Linux; ru_maxrss, the lifetime peak, elsewhere)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    hwm = _proc_status_bytes("VmHWM:")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator stats; on Linux the process's VmHWM, by
    writing 5 to /proc/self/clear_refs; a no-op where neither is possible)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def resident_bytes() -> int | None:
    """The process's resident set now (Linux), else None."""
    return _proc_status_bytes("VmRSS:")
