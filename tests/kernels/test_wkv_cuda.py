"""WKV CUDA kernels on a GPU vs the fp64 step reference: output, final state and every gradient.

Run on a machine with a GPU: ``pytest -m gpu tests/kernels`` (skipped without one). The first
test of each head size builds the extension (~1 min, cached by torch afterwards).

Tolerances are relative RMS errors against the reference run in fp64 on the same rounded inputs:
fp32 results accumulate only fp32 rounding; 16-bit results (y, dr, dk, dv, and dw when w is
16-bit) are additionally rounded once to bf16 (~2^-9) or fp16 (~2^-12).
"""

from __future__ import annotations

import pytest
import torch
from test_wkv import make_inputs
from wkv_compare import NAMES, assert_close, rel_rms, run_both

from rwkv_mm.kernels.wkv import _cuda_impl, wkv, wkv_cuda_or_fallback
from rwkv_mm.kernels.wkv_chunked import wkv_chunked
from rwkv_mm.kernels.wkv_cuda import wkv_cuda
from rwkv_mm.kernels.wkv_reference import wkv_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEV = "cuda"
FP32_TOL = 1e-4
HALF_TOL = {torch.bfloat16: 1e-2, torch.float16: 4e-3}
FP32_RESULTS = ("state", "du", "ds0")


def tolerances(dtype: torch.dtype, w_dtype: torch.dtype | None = None) -> dict[str, float]:
    if dtype == torch.float32:
        return {n: FP32_TOL for n in NAMES}
    tol = {n: (FP32_TOL if n in FP32_RESULTS else HALF_TOL[dtype]) for n in NAMES}
    if w_dtype == torch.float32:
        tol["dw"] = FP32_TOL
    return tol


def inputs_for(B, T, H, N, dtype, *, with_state=True, seed=0, style="finch"):
    """Random inputs (fp64, CPU). fp16 gets stronger decays (memory ~150 steps) so that long
    sequences stay inside fp16's range (max 65504) in y and dw."""
    x_range = (-5.0, 3.0) if dtype == torch.float16 else (-8.0, 3.0)
    return make_inputs(B, T, style=style, with_state=with_state, dtype=torch.float64, seed=seed,
                       heads=H, head_size=N, x_range=x_range)


# (B, H) per T: several batch and head counts, the reference loop kept short for long T.
SHAPES = {1: (3, 5), 17: (2, 3), 64: (4, 2), 1000: (1, 2)}


@pytest.mark.parametrize("T", sorted(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("N", [32, 64, 128])
def test_matches_reference(N, dtype, T):
    B, H = SHAPES[T]
    inputs = inputs_for(B, T, H, N, dtype, seed=T + N)
    got, ref = run_both(wkv_cuda, inputs, dtype, seed=T, device=DEV)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_close(got, ref, tolerances(dtype))


@pytest.mark.parametrize("N, dtype", [(64, torch.float32), (64, torch.bfloat16), (128, torch.bfloat16),
                                      (32, torch.float16)], ids=str)
def test_long_sequence(N, dtype):
    inputs = inputs_for(1, 4096, 2, N, dtype, seed=1)
    got, ref = run_both(wkv_cuda, inputs, dtype, seed=1, device=DEV)
    assert_close(got, ref, tolerances(dtype))


@pytest.mark.parametrize("with_state, grad_y, grad_state", [
    (False, True, True), (False, True, False), (True, True, False), (True, False, True)])
@pytest.mark.parametrize("N", [32, 64, 128])
def test_optional_state_and_gradients(N, with_state, grad_y, grad_state):
    inputs = inputs_for(2, 77, 3, N, torch.float32, with_state=with_state, seed=2)
    got, ref = run_both(wkv_cuda, inputs, torch.float32, grad_y=grad_y, grad_state=grad_state, seed=2, device=DEV)
    assert (got[-1] is None) == (not with_state)
    assert_close(got, ref, FP32_TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fp32_decay_with_16bit_inputs(dtype):
    inputs = inputs_for(2, 300, 2, 64, dtype, seed=3)
    got, ref = run_both(wkv_cuda, inputs, dtype, w_dtype=torch.float32, seed=3, device=DEV)
    assert got[5].dtype == torch.float32
    assert_close(got, ref, tolerances(dtype, torch.float32))


def test_eagle_broadcast_decay_and_strided_views():
    """Eagle's [H, N] decay as a zero-stride view, r/k/v as slices of one packed projection."""
    B, T, H, N = 2, 300, 3, 64
    r, k, v, w, u, s0 = inputs_for(B, T, H, N, torch.float32, style="eagle", seed=4)
    g = torch.Generator().manual_seed(5)
    gy = torch.randn(B, T, H, N, generator=g, dtype=torch.float64).to(DEV)
    gs = torch.randn(B, H, N, N, generator=g, dtype=torch.float64).to(DEV)
    results = []
    for dt, fn in ((torch.float32, wkv_cuda), (torch.float64, wkv_reference)):
        packed = torch.stack([r, k, v], dim=3).to(dt).to(DEV).requires_grad_()  # [B, T, H, 3, N]
        w_hn = w[0, 0].to(dt).to(DEV).requires_grad_()  # [H, N]
        u_, s0_ = u.to(dt).to(DEV).requires_grad_(), s0.to(dt).to(DEV).requires_grad_()
        rs, ks, vs = packed.unbind(3)
        y, s = fn(rs, ks, vs, w_hn[None, None].expand(B, T, H, N), u_, s0_)
        results.append([y, s, *torch.autograd.grad([y, s], [packed, w_hn, u_, s0_], [gy.to(dt), gs.to(dt)])])
    for name, a, b in zip(("y", "state", "d packed rkv", "dw [H, N]", "du", "ds0"), *results):
        assert rel_rms(a, b) < FP32_TOL, name


@pytest.mark.parametrize("w_value", [-1e-9, -100.0, "mixed"])
def test_extreme_decays(w_value):
    """No decay at all, total forgetting, and both mixed per token and channel: finite and exact.

    dw comes from a sum of r*dr and k*dk terms (see wkv_cuda.cu) whose difference it is, so its
    error is measured against the scale of those terms: with decays of e^-100 the true dw is
    ~1e-42 and the kernel's is at fp32 rounding level of |k*dk| instead.
    """
    B, T, H, N = 2, 500, 2, 64
    r, k, v, _, u, s0 = inputs_for(B, T, H, N, torch.float32, seed=6)
    if w_value == "mixed":
        g = torch.Generator().manual_seed(7)
        w = torch.where(torch.rand(B, T, H, N, generator=g) < 0.5, torch.tensor(-1e-9), torch.tensor(-100.0))
    else:
        w = torch.full((B, T, H, N), w_value)
    got, ref = run_both(wkv_cuda, (r, k, v, w.double(), u, s0), torch.float32, seed=6, device=DEV)
    assert all(x is None or torch.isfinite(x).all() for x in got)
    i_dw, i_dk = NAMES.index("dw"), NAMES.index("dk")
    dw_err = (got[i_dw].double() - ref[i_dw]).norm()
    assert dw_err < FP32_TOL * max(ref[i_dw].norm(), ref[i_dk].norm())
    got[i_dw] = ref[i_dw] = None
    assert_close(got, ref, FP32_TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_segments_with_state_passing_equal_one_pass(dtype):
    """Train on two halves, the first one's final state feeding the second (gradients flow across
    the boundary): the same outputs and gradients as one pass over the whole sequence."""
    B, T, H, N, split = 2, 1000, 4, 64, 377
    inputs = [x.to(DEV) for x in inputs_for(B, T, H, N, dtype, seed=8)]
    r, k, v, w = (x.to(dtype) for x in inputs[:4])
    u, s0 = inputs[4].float(), inputs[5].float()
    g = torch.Generator().manual_seed(9)
    gy = torch.randn(B, T, H, N, generator=g).to(dtype).to(DEV)
    gs = torch.randn(B, H, N, N, generator=g).to(DEV)

    def halves(r, k, v, w, u, s0):
        y1, s1 = wkv_cuda(r[:, :split], k[:, :split], v[:, :split], w[:, :split], u, s0)
        y2, s2 = wkv_cuda(r[:, split:], k[:, split:], v[:, split:], w[:, split:], u, s1)
        return torch.cat([y1, y2], dim=1), s2

    out = []
    for fn in (wkv_cuda, halves):
        xs = [x.detach().clone().requires_grad_() for x in (r, k, v, w, u, s0)]
        y, s = fn(*xs)
        out.append([y, s, *torch.autograd.grad([y, s], xs, [gy, gs])])
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # 16-bit dw: rounded after a different sum order
    for name, a, b in zip(NAMES, *out):
        assert rel_rms(a, b) < (1e-5 if name in FP32_RESULTS else tol), name


def test_public_wkv_uses_the_kernels():
    assert _cuda_impl() is wkv_cuda_or_fallback
    inputs = [x.to(DEV) for x in inputs_for(2, 100, 2, 64, torch.float32, seed=10)]
    y1, s1 = wkv(*inputs)
    y2, s2 = wkv_cuda(*inputs)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    # Not covered by the kernels: head size 16 and fp64 go to the chunked form.
    small = [x.to(DEV) for x in inputs_for(1, 20, 2, 16, torch.float32, seed=11)]
    torch.testing.assert_close(wkv(*small)[0], wkv_chunked(*small)[0], rtol=0, atol=0)


def test_empty_sequence_returns_the_state():
    r, k, v, w, u, s0 = (x.float().to(DEV) for x in inputs_for(2, 0, 2, 64, torch.float32))
    y, s = wkv_cuda(r, k, v, w, u, s0)
    assert y.shape == (2, 0, 2, 64)
    torch.testing.assert_close(s, s0)


def test_bad_inputs_raise():
    r, k, v, w, u, s0 = (x.float().to(DEV) for x in inputs_for(1, 5, 2, 64, torch.float32))
    with pytest.raises(ValueError, match="CUDA device"):
        wkv_cuda(r.cpu(), k, v, w, u, s0)
    with pytest.raises(ValueError, match="float64"):
        wkv_cuda(r.double(), k.double(), v.double(), w, u, s0)
