"""Bidirectional WKV against a direct O(T²) fp64 formula (independent of the scans)."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.kernels.wkv_bidirectional import wkv_bidirectional


def direct_bidirectional(r, k, v, w, u):
    """y_t = Σ_{i≠t} r_t·(Π_{j strictly between i and t} e^{w_j} ⊙ k_i) v_i + (r_t ⊙ u ⊙ k_t) v_t,
    pair by pair in fp64 (log decays summed explicitly for each pair)."""
    r, k, v, w, u = (x.double() for x in (r, k, v, w, u))
    B, T, H, N = r.shape
    y = torch.zeros(B, T, H, N, dtype=torch.float64)
    for t in range(T):
        for i in range(T):
            if i == t:
                weight = u.expand(B, H, N)
            else:
                lo, hi = min(i, t), max(i, t)
                weight = torch.exp(w[:, lo + 1:hi].sum(1))  # [B, H, N]; empty sum → 1
            score = (r[:, t] * weight * k[:, i]).sum(-1, keepdim=True)  # [B, H, 1]
            y[:, t] += score * v[:, i]
    return y


def make(B, T, H, N, *, eagle=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, dtype=torch.float64) for _ in range(3))
    if eagle:
        w = -torch.exp(torch.rand(H, N, generator=g, dtype=torch.float64) * 4 - 4)
        w = w[None, None].expand(B, T, H, N)
    else:
        w = -torch.exp(torch.rand(B, T, H, N, generator=g, dtype=torch.float64) * 5 - 4)
    u = torch.randn(H, N, generator=g, dtype=torch.float64)
    return tuple(x.to(dtype) for x in (r, k, v, w, u))


@pytest.mark.parametrize("T", [1, 2, 7, 33, 70])
@pytest.mark.parametrize("eagle", [False, True])
def test_matches_direct_formula_fp64(T, eagle):
    r, k, v, w, u = make(2, T, 2, 4, eagle=eagle, seed=T)
    y = wkv_bidirectional(r, k, v, w, u)
    ref = direct_bidirectional(r, k, v, w, u)
    assert y.shape == (2, T, 2, 4) and y.dtype == torch.float64
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9)


def test_fp32_close_to_fp64_formula():
    r, k, v, w, u = make(1, 45, 2, 8, dtype=torch.float32, seed=3)
    y = wkv_bidirectional(r, k, v, w, u)
    assert y.dtype == torch.float32
    ref = direct_bidirectional(r, k, v, w, u)
    assert (y.double() - ref).abs().max() / ref.abs().max() < 1e-5


def test_reversal_symmetry():
    """Reversing the sequence reverses the output, except that the bonus stays on the diagonal."""
    r, k, v, w, u = make(1, 19, 1, 4, seed=5)
    y = wkv_bidirectional(r, k, v, w, u)
    y_rev = wkv_bidirectional(*(x.flip(1) for x in (r, k, v, w)), u)
    torch.testing.assert_close(y_rev.flip(1), y, rtol=1e-10, atol=1e-10)


def test_gradients_match_direct_formula():
    r, k, v, w, u = (x.requires_grad_() for x in make(1, 9, 2, 4, seed=7))
    (wkv_bidirectional(r, k, v, w, u) ** 2).sum().backward()
    got = [x.grad.clone() for x in (r, k, v, w, u)]
    for x in (r, k, v, w, u):
        x.grad = None
    (direct_bidirectional(r, k, v, w, u) ** 2).sum().backward()
    for name, g, x in zip("rkvwu", got, (r, k, v, w, u)):
        torch.testing.assert_close(g, x.grad, rtol=1e-8, atol=1e-8, msg=f"grad {name}")


def test_rejects_bad_shapes():
    r, k, v, w, u = make(1, 4, 2, 4)
    with pytest.raises(ValueError, match="u must be"):
        wkv_bidirectional(r, k, v, w, u[:1])
