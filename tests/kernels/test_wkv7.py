"""WKV-7 (Goose): the step-by-step reference against the runtime's formula, the decode step and
the public op against the reference, gradients of the reference by gradcheck, and the contract."""

from __future__ import annotations

import pytest
import torch
from wkv7_inputs import make_inputs7, rel_err

from rwkv_mm.kernels import contract
from rwkv_mm.kernels.contract import WkvInputError
from rwkv_mm.kernels.wkv import WKV7_IMPLS, choose_wkv_impl, wkv7, wkv7_step
from rwkv_mm.kernels.wkv7_recurrent import wkv7_recurrent
from rwkv_mm.kernels.wkv7_reference import wkv7_reference


def runtime_formula(r, w, k, v, kk, alpha, state):
    """BlinkDL's RWKV_x070_TMix_one state update, written as in rwkv/model.py (B = 1, fp64):
    ``state = state * w.view(H,1,N) + state @ ab + vk`` with ab = (-kk)^T (kk*a), vk = v^T k,
    decay w = exp(log decay), then ``state @ r``."""
    T, H, N = r.shape
    ys = []
    for t in range(T):
        vk = v[t].view(H, N, 1) @ k[t].view(H, 1, N)
        ab = (-kk[t]).view(H, N, 1) @ (kk[t] * alpha[t]).view(H, 1, N)
        state = state * torch.exp(w[t]).view(H, 1, N) + state @ ab + vk
        ys.append((state @ r[t].view(H, N, 1)).view(H, N))
    return torch.stack(ys), state


def test_reference_is_the_runtime_update_with_value_major_state():
    T, H, N = 9, 2, 8
    r, w, k, v, a, b, s0 = make_inputs7(1, T, H, N, with_state=True, dtype=torch.float64, seed=1)
    kk = -a  # Goose: a = -kappa_hat, b = kappa_hat * alpha
    alpha = b / kk
    y_rt, s_rt = runtime_formula(r[0], w[0], k[0], v[0], kk[0], alpha[0], s0[0].clone())
    y, s = wkv7_reference(r, w, k, v, a, b, s0)
    torch.testing.assert_close(y[0], y_rt, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s[0], s_rt, rtol=1e-12, atol=1e-12)  # same [H, value, key] layout


@pytest.mark.parametrize("T", [1, 7, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_step_matches_reference(T, with_state):
    xs = make_inputs7(2, T, 3, 16, with_state=with_state, seed=T)
    y_ref, s_ref = wkv7_reference(*xs)
    y, s = wkv7_recurrent(*xs)
    assert y.shape == (2, T, 3, 16) and s.shape == (2, 3, 16, 16) and s.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
    state = xs[-1]
    for t in range(T):  # the single-token op, token by token
        y_t, state = wkv7_step(*(x[:, t] for x in xs[:-1]), state)
        assert rel_err(y_t, y_ref[:, t]) < 1e-5
    assert rel_err(state, s_ref) < 1e-5


def test_public_op_and_dispatch():
    xs = make_inputs7(2, 20, 2, 16, with_state=True, seed=3)
    y, s = wkv7(*xs)
    y_ref, s_ref = wkv7_reference(*xs)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
    assert choose_wkv_impl("cpu", (torch.float32,) * 6, 1, 64, family="wkv7") == "step"
    assert choose_wkv_impl("cpu", (torch.float32,) * 6, 100, 64, family="wkv7") in WKV7_IMPLS
    with pytest.raises(ValueError, match="unknown WKV family"):
        choose_wkv_impl("cpu", (torch.float32,) * 6, 100, 64, family="wkv8")


def test_gradcheck_reference():
    """fp64 gradients of every input and of the initial state (tiny shapes)."""
    xs = [x.requires_grad_() for x in make_inputs7(1, 4, 2, 3, with_state=True, dtype=torch.float64, seed=5)]
    assert torch.autograd.gradcheck(lambda *a: wkv7_reference(*a), xs)


def test_bf16_inputs_fp32_state():
    xs = make_inputs7(1, 10, 2, 16, with_state=True, seed=6)
    xs16 = [x.bfloat16() for x in xs[:-1]] + [xs[-1]]
    for fn in (wkv7_reference, wkv7_recurrent, wkv7):
        y, s = fn(*xs16)
        assert y.dtype == torch.bfloat16 and s.dtype == torch.float32


def _violations():
    r, w, k, v, a, b, s0 = make_inputs7(2, 5, 2, 8, with_state=True)
    return {
        "w shape": (r, w[..., :4], k, v, a, b, s0),
        "a shape": (r, w, k, v, a[:, :4], b, s0),
        "b shape": (r, w, k, v, a, b[:1], s0),
        "state shape": (r, w, k, v, a, b, s0[..., :4]),
        "r rank": (r[0], w, k, v, a, b, s0),
        "v dtype": (r, w, k, v.to(torch.int32), a, b, s0),
        "state dtype": (r, w, k, v, a, b, s0.to(torch.int64)),
    }


@pytest.mark.parametrize("what", sorted(_violations()))
def test_every_implementation_rejects_a_violation_with_the_same_error(what):
    args = _violations()[what]
    with pytest.raises(WkvInputError) as expected:
        contract.check_wkv7_inputs(*args)
    assert expected.value.args[0].startswith(what.split()[0] + " ")
    for name, op in {**WKV7_IMPLS, "wkv7": wkv7}.items():
        with pytest.raises(WkvInputError) as got:
            op(*args)
        assert str(got.value) == str(expected.value), name


@pytest.mark.parametrize("with_state", [False, True])
def test_empty_sequence(with_state):
    xs = make_inputs7(2, 0, 3, 8, with_state=with_state)
    for name in ("reference", "chunked", "step"):
        y, s = WKV7_IMPLS[name](*xs)
        assert y.shape == (2, 0, 3, 8), name
        torch.testing.assert_close(s, xs[-1] if with_state else torch.zeros(2, 3, 8, 8), msg=name)
