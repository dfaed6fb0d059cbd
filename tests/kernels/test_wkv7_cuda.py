"""WKV-7 CUDA kernels on a GPU vs the fp64 step reference: output, final state and every gradient.

Run on a machine with a GPU: ``pytest -m gpu tests/kernels`` (skipped without one). The first
test of each head size builds the extension (~1 min, cached by torch afterwards). Tolerances are
relative RMS errors against the reference in fp64 on the same rounded inputs (16-bit results are
also rounded once to bf16 ~2^-9 or fp16 ~2^-12).
"""

from __future__ import annotations

import pytest
import torch
from wkv7_inputs import RESULTS7, assert_close7, make_inputs7, rel_rms, run_both7

from rwkv_mm.kernels.wkv import choose_wkv_impl, wkv7
from rwkv_mm.kernels.wkv7_chunked import wkv7_chunked
from rwkv_mm.kernels.wkv7_cuda import wkv7_cuda

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEV = "cuda"
FP32_TOL = 1e-4


@pytest.mark.parametrize("N", [32, 64, 128])
@pytest.mark.parametrize("T, with_state", [(1, True), (31, False), (100, True)])
def test_fp32_matches_reference(N, T, with_state):
    inputs = make_inputs7(2, T, 3, N, with_state=with_state, dtype=torch.float64, seed=T + N)
    kern, ref = run_both7(wkv7_cuda, inputs, torch.float32, seed=T, device=DEV)
    assert_close7(kern, ref, FP32_TOL)


@pytest.mark.parametrize("dtype, w_dtype", [(torch.bfloat16, None), (torch.float16, None),
                                            (torch.bfloat16, torch.float32)])
def test_half_precision_inputs(dtype, w_dtype):
    inputs = make_inputs7(2, 300, 4, 64, with_state=True, dtype=torch.float64, seed=4)
    kern, ref = run_both7(wkv7_cuda, inputs, dtype, w_dtype=w_dtype, device=DEV)
    tol = {n: (FP32_TOL if n in ("state", "ds0") else 2e-2) for n in RESULTS7}
    assert_close7(kern, ref, tol)


def test_long_sequence_matches_chunked_and_dispatch_picks_the_kernels():
    assert choose_wkv_impl(DEV, (torch.bfloat16,) * 6, 4096, 64, family="wkv7") == "cuda"
    xs = [None if x is None else x.to(DEV) for x in make_inputs7(2, 4096, 4, 64, with_state=True, seed=5)]
    y, s = wkv7(*xs)
    y_chk, s_chk = wkv7_chunked(*xs)
    assert rel_rms(y, y_chk) < 1e-4 and rel_rms(s, s_chk) < 1e-4


def test_strided_views_and_extreme_decays():
    B, T, H, N = 1, 200, 2, 64
    inputs = make_inputs7(B, T, H, N, with_state=True, dtype=torch.float64, seed=6, decay="mixed")
    kern, ref = run_both7(wkv7_cuda, inputs, torch.float32, device=DEV)
    assert_close7(kern, ref, FP32_TOL)
    packed = torch.stack([inputs[i] for i in (0, 2, 3, 4, 5)], dim=3).float().to(DEV)  # [B, T, H, 5, N]
    r, k, v, a, b = packed.unbind(3)
    y, s = wkv7_cuda(r, inputs[1].float().to(DEV), k, v, a, b, inputs[6].float().to(DEV))
    assert rel_rms(y.cpu(), ref[0]) < FP32_TOL and rel_rms(s.cpu(), ref[1]) < FP32_TOL
