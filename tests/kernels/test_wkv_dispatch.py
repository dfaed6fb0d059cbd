"""The one WKV dispatch (`rwkv_mm.kernels.wkv.choose_wkv_impl`) and the one contract check.

The dispatcher picks what it should in each situation (CPU training, a decode step, CUDA tensors
with kernels built -- simulated by replacing the build --, a failed build), and every
implementation rejects a contract violation with the same error.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from test_wkv import make_inputs

from rwkv_mm import kernels
from rwkv_mm.kernels import contract, wkv_chunked, wkv_cuda, wkv_recurrent, wkv_reference
from rwkv_mm.kernels import wkv as dispatch
from rwkv_mm.kernels.contract import WkvInputError
from rwkv_mm.kernels.wkv import WKV_IMPLS, choose_wkv_impl, wkv, wkv_cuda_or_fallback, wkv_step
from rwkv_mm.kernels.wkv_bidirectional import wkv_bidirectional
from rwkv_mm.kernels.wkv_cuda import WkvBuildError

FP32 = (torch.float32,) * 4


@pytest.fixture
def builds(monkeypatch):
    """Replace the CUDA build: ``builds.fail = True`` makes it raise; ``builds.calls`` counts calls."""

    class Builds:
        fail = False
        calls: list[int] = []

    def fake_build(head_size: int, **_: object) -> object:
        Builds.calls.append(head_size)
        if Builds.fail:
            raise WkvBuildError("no CUDA toolkit found (test)")
        return object()

    Builds.calls = []
    monkeypatch.setattr(wkv_cuda, "build", fake_build)
    monkeypatch.setattr(dispatch, "_failed_builds", {})
    return Builds


def test_the_implementations_are_listed_once():
    assert WKV_IMPLS == {
        "reference": wkv_reference.wkv_reference,
        "chunked": wkv_chunked.wkv_chunked,
        "step": wkv_recurrent.wkv_recurrent,
        "cuda": wkv_cuda.wkv_cuda,
    }
    # No implementation module imports another to fall back on, and all share one contract check.
    assert not hasattr(wkv_cuda, "wkv_chunked") and not hasattr(wkv_cuda, "wkv_cuda_or_fallback")
    for mod in (wkv_reference, wkv_chunked, wkv_recurrent, wkv_cuda, dispatch):
        assert mod.check_wkv_inputs is contract.check_wkv_inputs, mod.__name__
    assert set(kernels.__all__) >= {"check_wkv_inputs", "choose_wkv_impl", "WKV_IMPLS", "WkvInputError"}
    assert kernels.choose_wkv_impl is choose_wkv_impl


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_cpu_sequences_use_chunked_without_building(builds, dtype):
    assert choose_wkv_impl("cpu", (dtype,) * 4, 100, 64) == "chunked"
    assert builds.calls == []
    r, k, v, w, u, s0 = make_inputs(2, 50, with_state=True)
    r.requires_grad_()  # training
    y1, s1 = wkv(r, k, v, w, u, s0)
    y2, s2 = wkv_chunked.wkv_chunked(r, k, v, w, u, s0)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_decode_step_uses_step(builds, device):
    assert choose_wkv_impl(device, FP32, 1, 64) == "step"
    assert builds.calls == []
    r, k, v, w, u, s0 = make_inputs(2, 1, with_state=True)
    y, s = wkv(r, k, v, w, u, s0)
    y_st, s_st = wkv_step(r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, s0)
    torch.testing.assert_close(y[:, 0], y_st, rtol=0, atol=0)
    torch.testing.assert_close(s, s_st, rtol=0, atol=0)
    y_ref, s_ref = wkv_reference.wkv_reference(r, k, v, w, u, s0)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(s, s_ref)


def test_cuda_tensors_with_built_kernels_use_cuda(builds):
    assert choose_wkv_impl(torch.device("cuda", 0), FP32, 100, 64) == "cuda"
    assert choose_wkv_impl("cuda", (torch.bfloat16,) * 3 + (torch.float32,), 4096, 128) == "cuda"
    assert builds.calls == [64, 128]


@pytest.mark.parametrize("dtypes, T, N", [(FP32, 100, 16), ((torch.float64,) * 4, 100, 64), (FP32, 0, 64)])
def test_cuda_tensors_the_kernels_dont_cover_use_chunked(builds, dtypes, T, N):
    assert choose_wkv_impl("cuda", dtypes, T, N) == "chunked"
    assert builds.calls == []


def test_failed_build_warns_once_then_chunked(builds):
    builds.fail = True
    with pytest.warns(RuntimeWarning, match="chunked PyTorch form: no CUDA toolkit found"):
        assert choose_wkv_impl("cuda", FP32, 100, 64) == "chunked"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later calls are silent and don't try again
        assert choose_wkv_impl("cuda", FP32, 100, 64) == "chunked"
        inputs = make_inputs(1, 9, with_state=True, head_size=64)
        y, s = wkv_cuda_or_fallback(*inputs)
    assert builds.calls == [64]
    y_ref, s_ref = wkv_chunked.wkv_chunked(*inputs)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)


def _sequence_ops():
    """Every entry point with the sequence contract, by name."""
    ops = dict(WKV_IMPLS)
    ops |= {"wkv": wkv, "wkv_cuda_or_fallback": wkv_cuda_or_fallback}
    return ops


def _violations():
    """(what, args) pairs, each breaking the contract in one argument."""
    r, k, v, w, u, s0 = make_inputs(2, 5, with_state=True)
    return {
        "k shape": (r, k[:, :4], v, w, u, s0),
        "w shape": (r, k, v, w[..., :8], u, s0),
        "u shape": (r, k, v, w, u[:, :15], s0),
        "state shape": (r, k, v, w, u, s0[..., :8]),
        "r rank": (r[0], k, v, w, u, s0),
        "v dtype": (r, k, v.to(torch.int32), w, u, s0),
        "state dtype": (r, k, v, w, u, s0.to(torch.int64)),
    }


@pytest.mark.parametrize("what", sorted(_violations()))
def test_every_implementation_rejects_a_violation_with_the_same_error(builds, what):
    args = _violations()[what]
    with pytest.raises(WkvInputError) as expected:
        contract.check_wkv_inputs(*args)
    assert expected.value.args[0].startswith(what.split()[0] + " ")
    for name, op in _sequence_ops().items():
        with pytest.raises(WkvInputError) as got:
            op(*args)
        assert str(got.value) == str(expected.value), name
    if "state" not in what:  # the non-causal op takes no state
        with pytest.raises(WkvInputError) as got:
            wkv_bidirectional(*args[:5])
        assert str(got.value) == str(expected.value)
    assert builds.calls == []  # rejected before anything is chosen or built


def test_decode_step_rejects_with_the_contract_error():
    r, k, v, w, u, s0 = make_inputs(2, 1, with_state=True)
    with pytest.raises(WkvInputError, match=r"^state "):
        wkv_step(r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, s0[:1])
    with pytest.raises(WkvInputError, match=r"^r must be \[B, H, N\]"):
        wkv_step(r, k[:, 0], v[:, 0], w[:, 0], u, s0)


@pytest.mark.parametrize("with_state", [False, True])
def test_every_cpu_implementation_agrees_on_an_empty_sequence(with_state):
    inputs = make_inputs(2, 0, with_state=with_state)
    for name in ("reference", "chunked", "step"):
        y, s = WKV_IMPLS[name](*inputs)
        assert y.shape == (2, 0, 3, 16), name
        expected = inputs[5] if with_state else torch.zeros(2, 3, 16, 16)
        torch.testing.assert_close(s, expected, msg=name)


def test_recurrent_form_matches_reference():
    inputs = make_inputs(2, 23, with_state=True, seed=4)
    y, s = wkv_recurrent.wkv_recurrent(*inputs)
    y_ref, s_ref = wkv_reference.wkv_reference(*inputs)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
