"""WKV operators: the chunked form and the decode step against the step-by-step reference."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.kernels.wkv import _cuda_impl, wkv, wkv_step
from rwkv_mm.kernels.wkv_chunked import wkv_chunked
from rwkv_mm.kernels.wkv_reference import wkv_reference

H, N = 3, 16


def make_inputs(
    B: int,
    T: int,
    *,
    style: str = "finch",
    with_state: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    x_range: tuple[float, float] = (-8.0, 3.0),
    heads: int = H,
    head_size: int = N,
) -> tuple[torch.Tensor, ...]:
    """Random r, k, v, w, u, state with realistic log decays w = -exp(x), x uniform in x_range.

    Decays then span ~1 - 3e-4 (x = -8) to ~2e-9 (x = 3). ``style="eagle"`` gives one static decay
    per channel, broadcast over B and T as an expanded view (as RWKV-5 uses it).
    """
    g = torch.Generator().manual_seed(seed)
    lo, hi = x_range

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    r, k, v = (randn(B, T, heads, head_size) for _ in range(3))
    if style == "eagle":
        x = torch.rand(heads, head_size, generator=g, dtype=torch.float64) * (hi - lo) + lo
        w = (-torch.exp(x)).to(dtype)[None, None].expand(B, T, heads, head_size)
    else:
        x = torch.rand(B, T, heads, head_size, generator=g, dtype=torch.float64) * (hi - lo) + lo
        w = (-torch.exp(x)).to(dtype)
    u = randn(heads, head_size)
    state = randn(B, heads, head_size, head_size) if with_state else None
    return r, k, v, w, u, state


def step_loop(r, k, v, w, u, state):
    """Run ``wkv_step`` token by token."""
    ys = []
    for t in range(r.shape[1]):
        y, state = wkv_step(r[:, t], k[:, t], v[:, t], w[:, t], u, state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the scale of b."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


@pytest.mark.parametrize("T", [1, 7, 64, 200])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("style", ["eagle", "finch"])
def test_chunked_and_step_match_reference(T, with_state, style):
    B = 2
    r, k, v, w, u, s0 = make_inputs(B, T, style=style, with_state=with_state, seed=T)
    y_ref, s_ref = wkv_reference(r, k, v, w, u, s0)
    y_chk, s_chk = wkv_chunked(r, k, v, w, u, s0)
    y_stp, s_stp = step_loop(r, k, v, w, u, s0 if with_state else torch.zeros(B, H, N, N))
    for y, s in ((y_chk, s_chk), (y_stp, s_stp)):
        assert y.shape == (B, T, H, N) and y.dtype == torch.float32
        assert s.shape == (B, H, N, N) and s.dtype == torch.float32
        assert rel_err(y, y_ref) < 1e-5
        assert rel_err(s, s_ref) < 1e-5


def test_public_wkv_dispatches_to_chunked_on_cpu():
    r, k, v, w, u, s0 = make_inputs(2, 50, with_state=True)
    y1, s1 = wkv(r, k, v, w, u, s0)
    y2, s2 = wkv_chunked(r, k, v, w, u, s0)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert (_cuda_impl() is None) == (torch.version.cuda is None)  # the CUDA kernels plug in there


@pytest.mark.parametrize("w_value", [-1e-9, -100.0, "mixed"])
def test_extreme_decays_are_exact_and_finite(w_value):
    B, T = 2, 75
    r, k, v, _, u, s0 = make_inputs(B, T, with_state=True, seed=3)
    if w_value == "mixed":  # per token and channel: no decay at all, or total forgetting
        g = torch.Generator().manual_seed(4)
        w = torch.where(torch.rand(B, T, H, N, generator=g) < 0.5, torch.tensor(-1e-9), torch.tensor(-100.0))
    else:
        w = torch.full((B, T, H, N), w_value)
    xs = [x.clone().requires_grad_() for x in (r, k, v, w, u, s0)]
    y_ref, s_ref = wkv_reference(*xs)
    y, s = wkv_chunked(*xs)
    y_stp, s_stp = step_loop(*xs)
    for out in (y, s, y_stp, s_stp):
        assert torch.isfinite(out).all()
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
    assert rel_err(y_stp, y_ref) < 1e-5 and rel_err(s_stp, s_ref) < 1e-5
    grads = torch.autograd.grad([y, s], xs, [torch.randn_like(y), torch.randn_like(s)])
    assert all(torch.isfinite(g_).all() for g_ in grads)


@pytest.mark.parametrize("T", [37, 64])
@pytest.mark.parametrize("style", ["eagle", "finch"])
def test_chunked_gradients_match_reference(T, style):
    """fp64 on both sides: gradients for r, k, v, w, u and the initial state agree to ~1e-12."""
    B = 2
    inputs = make_inputs(B, T, style=style, with_state=True, dtype=torch.float64, seed=10 + T)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(B, T, H, N, generator=g, dtype=torch.float64)
    gs = torch.randn(B, H, N, N, generator=g, dtype=torch.float64)
    grads = []
    for fn in (wkv_reference, lambda *a: wkv_chunked(*a, chunk_size=16, sub_chunk=4)):
        xs = [x.detach().clone().requires_grad_() for x in inputs]  # an expanded w becomes a full leaf
        y, s = fn(*xs)
        grads.append(torch.autograd.grad([y, s], xs, [gy, gs]))
    for name, g_chk, g_ref in zip("r k v w u state".split(), *grads[::-1]):
        assert rel_err(g_chk, g_ref) < 1e-10, name


def test_chunked_gradients_fp32_default_sizes():
    B, T = 2, 100
    inputs = make_inputs(B, T, with_state=True, seed=5)
    gy, gs = torch.randn(B, T, H, N), torch.randn(B, H, N, N)
    grads = []
    for fn in (wkv_reference, wkv_chunked):
        xs = [x.clone().requires_grad_() for x in inputs]
        y, s = fn(*xs)
        grads.append(torch.autograd.grad([y, s], xs, [gy, gs]))
    for name, g_chk, g_ref in zip("r k v w u state".split(), grads[1], grads[0]):
        assert rel_err(g_chk, g_ref) < 1e-4, name


@pytest.mark.parametrize("sizes", [(8, 2), (16, 4), (32, 1), (64, 8), (64, 16), (128, 4)])
def test_chunk_sizes_agree(sizes):
    chunk_size, sub_chunk = sizes
    inputs = make_inputs(2, 150, with_state=True, dtype=torch.float64, seed=6)
    y0, s0 = wkv_chunked(*inputs)
    y1, s1 = wkv_chunked(*inputs, chunk_size=chunk_size, sub_chunk=sub_chunk)
    assert rel_err(y1, y0) < 1e-12 and rel_err(s1, s0) < 1e-12


def test_bad_chunk_sizes_raise():
    inputs = make_inputs(1, 10)
    with pytest.raises(ValueError, match="chunk_size"):
        wkv_chunked(*inputs, chunk_size=24, sub_chunk=4)  # 6 is not a power of two
    with pytest.raises(ValueError, match="chunk_size"):
        wkv_chunked(*inputs, chunk_size=32, sub_chunk=0)


@pytest.mark.parametrize("split", [1, 33, 64])
def test_state_passing_equals_one_pass(split):
    r, k, v, w, u, s0 = make_inputs(2, 130, with_state=True, seed=7)
    y, s = wkv_chunked(r, k, v, w, u, s0)
    y_a, s_a = wkv_chunked(r[:, :split], k[:, :split], v[:, :split], w[:, :split], u, s0)
    y_b, s_b = wkv(r[:, split:], k[:, split:], v[:, split:], w[:, split:], u, s_a)
    assert rel_err(torch.cat([y_a, y_b], dim=1), y) < 1e-5
    assert rel_err(s_b, s) < 1e-5


def test_empty_sequence_returns_state_unchanged():
    r, k, v, w, u, s0 = make_inputs(2, 0, with_state=True)
    y, s = wkv_chunked(r, k, v, w, u, s0)
    assert y.shape == (2, 0, H, N)
    torch.testing.assert_close(s, s0)


def test_bf16_inputs():
    inputs = make_inputs(2, 80, with_state=True, seed=8)
    r, k, v, w, u, s0 = inputs
    bf = [x.to(torch.bfloat16) for x in (r, k, v, w, u)]
    y, s = wkv(*bf, s0)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    # Same math on the bf16-rounded values in fp32: only the final rounding of y differs.
    y32, s32 = wkv_reference(*[x.float() for x in bf], s0)
    assert rel_err(y, y32) < 1e-2
    assert rel_err(s, s32) < 1e-5
    y_st, s_st = wkv_step(*[x[:, 0] for x in bf[:4]], bf[4], s0)
    assert y_st.dtype == torch.bfloat16 and s_st.dtype == torch.float32


def test_realistic_head_size():
    """N = 64 as in the real models, with a sequence longer than one chunk."""
    r, k, v, w, u, s0 = make_inputs(1, 100, with_state=True, seed=9, heads=2, head_size=64)
    y_ref, s_ref = wkv_reference(r, k, v, w, u, s0)
    y, s = wkv(r, k, v, w, u, s0)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5


def test_step_without_state_starts_from_zeros():
    r, k, v, w, u, _ = make_inputs(2, 1)
    y0, s0 = wkv_step(r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, None)
    y1, s1 = wkv_step(r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, torch.zeros(2, H, N, N))
    torch.testing.assert_close(y0, y1)
    torch.testing.assert_close(s0, s1)


def test_shape_errors_name_the_argument():
    r, k, v, w, u, s0 = make_inputs(2, 5, with_state=True)
    with pytest.raises(ValueError, match=r"^k .*\(2, 4, 3, 16\)"):
        wkv(r, k[:, :4], v, w, u, s0)
    with pytest.raises(ValueError, match=r"^w "):
        wkv(r, k, v, w[..., :8], u, s0)
    with pytest.raises(ValueError, match=r"^u .*\(3, 15\)"):
        wkv(r, k, v, w, u[:, :15], s0)
    with pytest.raises(ValueError, match=r"^state .*\(2, 3, 16, 8\)"):
        wkv(r, k, v, w, u, s0[..., :8])
    with pytest.raises(ValueError, match=r"^r "):
        wkv(r[0], k, v, w, u, s0)
    with pytest.raises(ValueError, match=r"^v "):
        wkv_step(r[:, 0], k[:, 0], v[:, 0, :2], w[:, 0], u, s0)
    with pytest.raises(ValueError, match=r"^state "):
        wkv_step(r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, s0[:1])
    with pytest.raises(ValueError, match=r"^r "):
        wkv_step(r, k[:, 0], v[:, 0], w[:, 0], u, s0)
