"""The WKV-7 CUDA kernels' source, run on the CPU through the emulation in emulate/ (no GPU needed).

The same cuda/wkv7_cuda.cu that nvcc compiles is built with g++ against the host emulation of CUDA
(fibers for threads, real barrier semantics) and driven through the real autograd Function
(`rwkv_mm.kernels.wkv7_cuda._apply7`). Compared with the fp64 step reference: output, final state
and every gradient, for each head size, several chunk counts of the backward (T around multiples
of its 32-step checkpoints), 16-bit inputs, strided views and segments with state passing.
"""

from __future__ import annotations

import pytest
import torch
from wkv7_inputs import RESULTS7, assert_close7, make_inputs7, rel_rms, run_both7
from wkv_emulation import build_emulated7, compiler

from rwkv_mm.kernels.wkv7_cuda import _apply7

pytestmark = pytest.mark.skipif(compiler() is None, reason="no g++ to build the emulated kernels")


def emulated(*xs):
    return _apply7(*xs, build_emulated7(xs[0].shape[-1]))


@pytest.mark.parametrize(
    "N, B, H, T", [(32, 2, 2, 1), (32, 1, 2, 31), (32, 1, 1, 65), (64, 1, 2, 33), (128, 1, 1, 12)],
)
def test_fp32_matches_reference(N, B, H, T):
    inputs = make_inputs7(B, T, H, N, with_state=True, dtype=torch.float64, seed=T)
    kern, ref = run_both7(emulated, inputs, torch.float32, seed=T)
    assert_close7(kern, ref, 1e-5)


@pytest.mark.parametrize("with_state, grad_y, grad_state", [(False, True, True), (True, True, False),
                                                             (False, True, False), (True, False, True)])
def test_optional_state_and_gradients(with_state, grad_y, grad_state):
    inputs = make_inputs7(2, 19, 2, 32, with_state=with_state, dtype=torch.float64, seed=3)
    kern, ref = run_both7(emulated, inputs, torch.float32, grad_y=grad_y, grad_state=grad_state)
    assert (kern[-1] is None) == (not with_state)
    assert_close7(kern, ref, 1e-5)


@pytest.mark.parametrize("dtype, w_dtype", [(torch.bfloat16, None), (torch.float16, None),
                                            (torch.bfloat16, torch.float32)])
def test_half_precision_inputs(dtype, w_dtype):
    inputs = make_inputs7(1, 23, 2, 32, with_state=True, dtype=torch.float64, seed=4)
    kern, ref = run_both7(emulated, inputs, dtype, w_dtype=w_dtype)
    assert kern[0].dtype == dtype and kern[1].dtype == torch.float32
    assert kern[2].dtype == dtype and kern[3].dtype == (w_dtype or dtype) and kern[8].dtype == torch.float32
    # 16-bit outputs are rounded once (~2^-9 relative for bf16); fp32 ones only accumulate.
    tol = {n: 1e-2 for n in RESULTS7} | {"state": 1e-5, "ds0": 1e-5}
    if w_dtype == torch.float32:
        tol["dw"] = 1e-5
    assert_close7(kern, ref, tol)


def test_extreme_decays_and_strided_views():
    """Decays of -1e-9 or -100 per token and channel; r, k, v, a, b as slices of one packed tensor."""
    B, T, H, N = 1, 40, 2, 32
    inputs = make_inputs7(B, T, H, N, with_state=True, dtype=torch.float64, seed=6, decay="mixed")
    packed = torch.stack([inputs[i] for i in (0, 2, 3, 4, 5)], dim=3).float()  # [B, T, H, 5, N]

    def from_packed(r, w, k, v, a, b, s0):
        return emulated(*packed.unbind(3)[:1], w, *packed.unbind(3)[1:], s0)

    y, s = from_packed(*inputs)
    assert all(torch.isfinite(x).all() for x in (y, s))
    kern, ref = run_both7(emulated, inputs, torch.float32)
    assert_close7(kern, ref, 1e-5)
    from rwkv_mm.kernels.wkv7_reference import wkv7_reference

    y_ref, s_ref = wkv7_reference(*inputs)
    assert rel_rms(y, y_ref) < 1e-5 and rel_rms(s, s_ref) < 1e-5


def test_segments_with_state_passing_equal_one_pass():
    """Two halves, the first one's final state feeding the second: same outputs and gradients."""
    B, T, H, N, split = 1, 45, 2, 32, 20
    inputs = make_inputs7(B, T, H, N, with_state=True, seed=8)
    g = torch.Generator().manual_seed(9)
    gy, gs = torch.randn(B, T, H, N, generator=g), torch.randn(B, H, N, N, generator=g)

    def halves(*xs):
        *seq, s0 = xs
        y1, s1 = emulated(*(x[:, :split] for x in seq), s0)
        y2, s2 = emulated(*(x[:, split:] for x in seq), s1)
        return torch.cat([y1, y2], dim=1), s2

    out = []
    for fn in (emulated, halves):
        xs = [x.clone().requires_grad_() for x in inputs]
        y, s = fn(*xs)
        out.append([y, s, *torch.autograd.grad([y, s], xs, [gy, gs])])
    for name, a, b in zip(RESULTS7, *out):
        assert rel_rms(a, b) < 1e-6, name
