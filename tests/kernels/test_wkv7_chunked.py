"""The chunked WKV-7 form against the step-by-step reference: outputs, final state, gradients of
every input and of the initial state, segments with state passing, extreme decays."""

from __future__ import annotations

import pytest
import torch
from wkv7_inputs import make_inputs7, rel_err

from rwkv_mm.kernels.wkv import choose_wkv_impl, wkv7
from rwkv_mm.kernels.wkv7_chunked import wkv7_chunked
from rwkv_mm.kernels.wkv7_recurrent import wkv7_recurrent
from rwkv_mm.kernels.wkv7_reference import wkv7_reference

NAMES = ("r", "w", "k", "v", "a", "b", "state")


@pytest.mark.parametrize("T", [1, 7, 64, 200])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("H, N", [(1, 64), (3, 16), (2, 32)])
def test_chunked_and_step_match_reference(T, with_state, H, N):
    xs = make_inputs7(2, T, H, N, with_state=with_state, seed=T + N)
    y_ref, s_ref = wkv7_reference(*xs)
    for fn in (wkv7_chunked, wkv7_recurrent):
        y, s = fn(*xs)
        assert y.shape == (2, T, H, N) and y.dtype == torch.float32
        assert s.shape == (2, H, N, N) and s.dtype == torch.float32
        assert rel_err(y, y_ref) < 1e-5, fn.__name__
        assert rel_err(s, s_ref) < 1e-5, fn.__name__


@pytest.mark.parametrize("chunk_size, block", [(32, 8), (16, 4), (64, 16), (8, 8)])
@pytest.mark.parametrize("decay", ["goose", "wide", "mixed"])
def test_chunk_shapes_and_decays_fp64(chunk_size, block, decay):
    """Both pair-matrix paths (factored for bounded decays, exact blocks for strong ones) to ~1e-13."""
    xs = make_inputs7(2, 75, 2, 16, with_state=True, dtype=torch.float64, seed=2, decay=decay)
    y_ref, s_ref = wkv7_reference(*xs)
    y, s = wkv7_chunked(*xs, chunk_size=chunk_size, block=block)
    assert rel_err(y, y_ref) < 1e-12 and rel_err(s, s_ref) < 1e-12


@pytest.mark.parametrize("decay", ["wide", "mixed"])
def test_extreme_decays_fp32_are_exact_and_finite(decay):
    xs = [x.requires_grad_() for x in make_inputs7(2, 90, 2, 16, with_state=True, seed=3, decay=decay)]
    y_ref, s_ref = wkv7_reference(*xs)
    y, s = wkv7_chunked(*xs)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
    grads = torch.autograd.grad([y, s], xs, [torch.randn_like(y), torch.randn_like(s)])
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("T, with_state", [(37, True), (64, False), (100, True)])
@pytest.mark.parametrize("decay", ["goose", "mixed"])
def test_chunked_gradients_match_reference(T, with_state, decay):
    """fp64 on both sides: the gradient of every input and of the initial state."""
    inputs = make_inputs7(2, T, 2, 16, with_state=with_state, dtype=torch.float64, seed=10 + T, decay=decay)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(2, T, 2, 16, generator=g, dtype=torch.float64)
    gs = torch.randn(2, 2, 16, 16, generator=g, dtype=torch.float64)
    grads = []
    for fn in (wkv7_reference, lambda *x: wkv7_chunked(*x, chunk_size=16, block=4)):
        xs = [None if x is None else x.clone().requires_grad_() for x in inputs]
        y, s = fn(*xs)
        leaves = [x for x in xs if x is not None]
        grads.append(torch.autograd.grad([y, s], leaves, [gy, gs]))
    for name, g_chk, g_ref in zip(NAMES, grads[1], grads[0]):
        assert rel_err(g_chk, g_ref) < 1e-10, name


def test_gradcheck_chunked():
    xs = [x.requires_grad_() for x in make_inputs7(1, 6, 1, 3, with_state=True, dtype=torch.float64, seed=7)]
    assert torch.autograd.gradcheck(lambda *a: wkv7_chunked(*a, chunk_size=4, block=2), xs)


@pytest.mark.parametrize("split", [1, 32, 45])
def test_segments_with_state_passing_equal_one_pass(split):
    """Two halves, the first one's final state feeding the second: same outputs and gradients."""
    inputs = make_inputs7(2, 90, 2, 16, with_state=True, dtype=torch.float64, seed=8)
    g = torch.Generator().manual_seed(9)
    gy = torch.randn(2, 90, 2, 16, generator=g, dtype=torch.float64)
    gs = torch.randn(2, 2, 16, 16, generator=g, dtype=torch.float64)

    def halves(*x):
        *seq, s0 = x
        y1, s1 = wkv7_chunked(*(t[:, :split] for t in seq), s0)
        y2, s2 = wkv7_chunked(*(t[:, split:] for t in seq), s1)
        return torch.cat([y1, y2], dim=1), s2

    out = []
    for fn in (wkv7_chunked, halves):
        xs = [x.clone().requires_grad_() for x in inputs]
        y, s = fn(*xs)
        out.append([y, s, *torch.autograd.grad([y, s], xs, [gy, gs])])
    for name, a, b in zip(("y", "state", *NAMES), *out):
        assert rel_err(a, b) < 1e-12, name


def test_cpu_dispatch_runs_chunked_and_bf16_inputs():
    assert choose_wkv_impl("cpu", (torch.float32,) * 6, 100, 64, family="wkv7") == "chunked"
    xs = make_inputs7(1, 50, 2, 16, with_state=True, seed=11)
    y1, s1 = wkv7(*xs)
    y2, s2 = wkv7_chunked(*xs)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    xs16 = [x.bfloat16() for x in xs[:-1]] + [xs[-1]]
    y, s = wkv7_chunked(*xs16)
    y_ref, s_ref = wkv7_reference(*xs16)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-2 and rel_err(s, s_ref) < 1e-5


def test_bad_chunk_size():
    xs = make_inputs7(1, 5, 1, 4)
    with pytest.raises(ValueError, match="multiple of block"):
        wkv7_chunked(*xs, chunk_size=12, block=8)
