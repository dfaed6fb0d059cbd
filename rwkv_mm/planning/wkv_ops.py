"""The recurrent mixers' ops (`rwkv_mm.kernels`) as the planner and the FLOP meter see them.

Inside a WKV implementation the work is not what the model is charged for: the chunked PyTorch
form (CPU, and GPUs without the kernels) runs matmuls over chunks and keeps a few dozen
intermediate tensors for backward, where the CUDA kernel does a scan and keeps only its inputs.
So both the meter and the memory trace recognise a WKV call by its function's frame, charge the
op's own FLOP formula (`WkvOp`) for it, and (for a GPU plan) replace what the chunked form saved
by what the kernel saves.

Per head and token, with N the head size (multiply and add count one FLOP each):

    RWKV-5/6 (Eagle, Finch; Finch-C2 with u = 0):
        kv = kᵀv (N²), y = r·(S + u⊙kv) (u⊙kv N², add N², r·M 2N²), S = w⊙S + kv (2N²)  -> 7N²
    RWKV-7 (Goose):
        S = S·diag(w) (N²) + (S·a)bᵀ (2N² + 2N²) + vkᵀ (2N²), y = S·r (2N²)                 -> 9N²

forward only; backward costs twice the forward (each input's gradient is another pass of the
same size), so training charges 3× these.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import FrameType


@dataclass(frozen=True)
class WkvOp:
    """One recurrent op: its name in formulas, forward FLOPs per head and token for head size N,
    and whether the CUDA kernel's saved tensors are modelled (`kernel_saves`)."""

    label: str
    flops_per_head_token: int  # multiplier of N²
    kernel_saves: bool

    def forward_flops(self, B: int, T: int, H: int, N: int) -> int:
        """Forward FLOPs of one call over r [B, T, H, N]."""
        return self.flops_per_head_token * B * T * H * N * N


RWKV6_WKV = WkvOp("WKV-5/6", 7, kernel_saves=True)
RWKV7_WKV = WkvOp("WKV-7", 9, kernel_saves=False)

#: implementation function name (a module of rwkv_mm.kernels) -> the op it computes
WKV_OPS: dict[str, WkvOp] = {
    "wkv_chunked": RWKV6_WKV, "wkv_cuda": RWKV6_WKV, "wkv_reference": RWKV6_WKV,
    "wkv_recurrent": RWKV6_WKV,
    "wkv7_chunked": RWKV7_WKV, "wkv7_cuda": RWKV7_WKV, "wkv7_reference": RWKV7_WKV,
    "wkv7_recurrent": RWKV7_WKV,
}
_KERNELS = "rwkv_mm.kernels"
_MAX_DEPTH = 40


def wkv_frame(start: FrameType | None = None) -> FrameType | None:
    """The frame of the WKV implementation (a `WKV_OPS` function in rwkv_mm.kernels) that the
    caller runs inside, or None. `start`: the frame to search up from (default: the caller's)."""
    frame = start if start is not None else sys._getframe(1)
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return None
        code = frame.f_code
        if code.co_name in WKV_OPS and str(frame.f_globals.get("__name__", "")).startswith(_KERNELS):
            return frame
        frame = frame.f_back
    return None


@dataclass
class WkvCall:
    """One WKV call seen while tracing: its op, the shape of r [B, T, H, N], whether it is
    differentiated, and what a CUDA kernel would save for backward: r, k, v (`rkv_numel`
    elements, in the compute dtype: bf16 under autocast), w's storage (fp32; a broadcast decay
    is small) and u plus the output state (fp32, `fixed_bytes`)."""

    op: WkvOp
    shape: tuple[int, int, int, int]
    requires_grad: bool
    rkv_numel: int
    w_bytes: int
    fixed_bytes: int

    def forward_flops(self) -> int:
        return self.op.forward_flops(*self.shape)

    def kernel_saved_bytes(self, itemsize: int) -> int:
        """Bytes the kernel keeps for backward with r, k, v of `itemsize` bytes."""
        return self.rkv_numel * itemsize + self.w_bytes + self.fixed_bytes


def describe_call(frame: FrameType) -> WkvCall:
    """The `WkvCall` of a WKV implementation's frame (its arguments r, k, v, w, u are locals)."""
    op = WKV_OPS[frame.f_code.co_name]
    local = frame.f_locals
    B, T, H, N = local["r"].shape
    grad = any(getattr(local.get(name), "requires_grad", False) for name in ("r", "k", "v", "w"))
    w = local.get("w")
    w_bytes = w.untyped_storage().nbytes() if w is not None else 0
    return WkvCall(op, (B, T, H, N), grad, 3 * B * T * H * N, w_bytes, H * N * 4 + B * H * N * N * 4)
