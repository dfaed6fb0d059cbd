"""The WKV CUDA kernels' source, run on the CPU through the emulation in emulate/ (no GPU needed).

The same cuda/wkv_cuda.cu that nvcc compiles is built with g++ against a host emulation of the
CUDA subset it uses (fibers for threads, real barrier semantics), and driven through the real
autograd Function (`rwkv_mm.kernels.wkv_cuda._apply`). Compared with the fp64 step reference:
output, final state and every gradient, for every head size, dtype, stride pattern and the
state-passing cases. Timing, occupancy and true concurrency are what only a GPU run checks
(tests/kernels/test_wkv_cuda.py).
"""

from __future__ import annotations

import pytest
import torch
import wkv_compare as compare
from test_wkv import make_inputs
from wkv_compare import NAMES, assert_close, rel_rms
from wkv_emulation import build_emulated, compiler

from rwkv_mm.kernels.wkv_cuda import _apply
from rwkv_mm.kernels.wkv_reference import wkv_reference

pytestmark = pytest.mark.skipif(compiler() is None, reason="no g++ to build the emulated kernels")


def run_both(inputs, dtype, **kw):
    """Emulated kernels (through the real autograd Function) vs the fp64 reference."""
    N = inputs[0].shape[-1]
    return compare.run_both(lambda *a: _apply(*a, build_emulated(N)), inputs, dtype, **kw)


@pytest.mark.parametrize(
    "N, B, H, T",
    [(32, 2, 3, 1), (32, 2, 3, 17), (32, 1, 2, 50), (64, 2, 2, 33), (64, 1, 1, 16), (128, 1, 1, 21)],
)
def test_fp32_matches_reference(N, B, H, T):
    inputs = make_inputs(B, T, with_state=True, dtype=torch.float64, seed=T, heads=H, head_size=N)
    kern, ref = run_both(inputs, torch.float32, seed=T)
    assert_close(kern, ref, 1e-5)


@pytest.mark.parametrize("with_state, grad_y, grad_state", [(False, True, True), (True, True, False),
                                                             (False, True, False), (True, False, True)])
def test_optional_state_and_gradients(with_state, grad_y, grad_state):
    inputs = make_inputs(2, 19, with_state=with_state, dtype=torch.float64, seed=3, heads=2, head_size=32)
    kern, ref = run_both(inputs, torch.float32, grad_y=grad_y, grad_state=grad_state)
    assert (kern[-1] is None) == (not with_state)
    assert_close(kern, ref, 1e-5)


@pytest.mark.parametrize("dtype, w_dtype", [(torch.bfloat16, None), (torch.float16, None),
                                            (torch.bfloat16, torch.float32), (torch.float16, torch.float32)])
def test_half_precision_inputs(dtype, w_dtype):
    inputs = make_inputs(2, 23, with_state=True, dtype=torch.float64, seed=4, heads=2, head_size=32)
    kern, ref = run_both(inputs, dtype, w_dtype=w_dtype)
    assert kern[0].dtype == dtype and kern[1].dtype == torch.float32
    assert kern[2].dtype == dtype and kern[5].dtype == (w_dtype or dtype)
    # 16-bit outputs are rounded once (~2^-9 relative for bf16); fp32 ones only accumulate.
    tol = {n: 1e-2 for n in NAMES} | {"state": 1e-5, "du": 1e-5, "ds0": 1e-5}
    assert_close(kern, ref, tol)


class StrideSpy:
    """The emulated module, recording the strides the kernels receive."""

    def __init__(self, ext) -> None:
        self.ext, self.strides = ext, {}

    def forward(self, r, k, v, w, u, s0):
        self.strides = {"r": r.stride(), "w": w.stride()}
        return self.ext.forward(r, k, v, w, u, s0)

    def backward(self, *args):
        return self.ext.backward(*args)


def test_eagle_broadcast_decay_and_strided_views():
    """w as a zero-stride view of [H, N] (Eagle), r/k/v as slices of one packed tensor: the kernels
    read them in place; the gradient of the [H, N] decay is summed over B and T."""
    B, T, H, N = 2, 18, 2, 32
    r, k, v, w, u, s0 = make_inputs(B, T, style="eagle", with_state=True, dtype=torch.float64, seed=5,
                                    heads=H, head_size=N)
    g = torch.Generator().manual_seed(10)
    gy, gs = torch.randn(B, T, H, N, generator=g, dtype=torch.float64), torch.randn(B, H, N, N, generator=g)
    spy = StrideSpy(build_emulated(N))
    grads = []
    for dt, fn in ((torch.float32, lambda *a: _apply(*a, spy)), (torch.float64, wkv_reference)):
        packed = torch.stack([r, k, v], dim=3).to(dt).requires_grad_()  # [B, T, H, 3, N]
        w_hn = w[0, 0].to(dt).clone().requires_grad_()  # [H, N]
        u_, s0_ = u.to(dt).requires_grad_(), s0.to(dt).requires_grad_()
        rs, ks, vs = packed.unbind(3)
        y, s = fn(rs, ks, vs, w_hn[None, None].expand(B, T, H, N), u_, s0_)
        grads.append([y, s, *torch.autograd.grad([y, s], [packed, w_hn, u_, s0_], [gy.to(dt), gs.to(dt)])])
    assert spy.strides["w"][:2] == (0, 0) and spy.strides["r"] == (T * H * 3 * N, H * 3 * N, 3 * N, 1)
    for name, a, b in zip(("y", "state", "d packed rkv", "dw [H, N]", "du", "ds0"), *grads):
        assert rel_rms(a, b) < 1e-5, name


def test_extreme_decays():
    B, T, H, N = 1, 40, 2, 32
    r, k, v, _, u, s0 = make_inputs(B, T, with_state=True, dtype=torch.float64, seed=6, heads=H, head_size=N)
    g = torch.Generator().manual_seed(7)
    w = torch.where(torch.rand(B, T, H, N, generator=g) < 0.5, torch.tensor(-1e-9), torch.tensor(-100.0)).double()
    kern, ref = run_both((r, k, v, w, u, s0), torch.float32)
    assert all(torch.isfinite(x).all() for x in kern)
    assert_close(kern, ref, 1e-5)


def test_segments_with_state_passing_equal_one_pass():
    """Two halves, the first one's final state feeding the second: same outputs and gradients."""
    B, T, H, N = 2, 30, 2, 32
    inputs = make_inputs(B, T, with_state=True, dtype=torch.float32, seed=8, heads=H, head_size=N)
    ext = build_emulated(N)
    g = torch.Generator().manual_seed(9)
    gy, gs = torch.randn(B, T, H, N, generator=g), torch.randn(B, H, N, N, generator=g)

    def whole(r, k, v, w, u, s0):
        return _apply(r, k, v, w, u, s0, ext)

    def halves(r, k, v, w, u, s0, split=13):
        y1, s1 = _apply(r[:, :split], k[:, :split], v[:, :split], w[:, :split], u, s0, ext)
        y2, s2 = _apply(r[:, split:], k[:, split:], v[:, split:], w[:, split:], u, s1, ext)
        return torch.cat([y1, y2], dim=1), s2

    out = []
    for fn in (whole, halves):
        xs = [x.clone().requires_grad_() for x in inputs]
        y, s = fn(*xs)
        out.append([y, s, *torch.autograd.grad([y, s], xs, [gy, gs])])
    for name, a, b in zip(NAMES, *out):
        assert rel_rms(a, b) < 1e-6, name
