"""The "wkv7" family of the one WKV dispatch (`choose_wkv_impl(..., family="wkv7")`): what it picks
on the CPU, for a decode step, for CUDA tensors with kernels built (simulated by replacing the
build), after a failed build, and for inputs the kernels don't cover; the Eagle/Finch family is
left alone."""

from __future__ import annotations

import warnings

import pytest
import torch
from wkv7_inputs import make_inputs7

from rwkv_mm import kernels
from rwkv_mm.kernels import contract, wkv7_chunked, wkv7_cuda, wkv7_recurrent, wkv7_reference, wkv_cuda
from rwkv_mm.kernels import wkv as dispatch
from rwkv_mm.kernels.wkv import (
    WKV7_IMPLS,
    WKV_FAMILIES,
    WKV_IMPLS,
    choose_wkv_impl,
    wkv7,
    wkv7_cuda_or_fallback,
    wkv7_step,
)
from rwkv_mm.kernels.wkv_cuda import WkvBuildError

FP32 = (torch.float32,) * 6


@pytest.fixture
def builds(monkeypatch):
    """Replace both CUDA builds: ``builds.fail = True`` makes them raise; calls are recorded."""

    class Builds:
        fail = False
        calls: list[tuple[str, int]] = []

    def fake(family):
        def build(head_size: int, **_: object) -> object:
            Builds.calls.append((family, head_size))
            if Builds.fail:
                raise WkvBuildError("no CUDA toolkit found (test)")
            return object()

        return build

    Builds.calls = []
    monkeypatch.setattr(wkv7_cuda, "build7", fake("wkv7"))
    monkeypatch.setattr(wkv_cuda, "build", fake("wkv"))
    monkeypatch.setattr(dispatch, "_failed_builds", {})
    return Builds


def test_one_table_per_family_in_the_one_dispatch():
    assert WKV_FAMILIES == {"wkv": WKV_IMPLS, "wkv7": WKV7_IMPLS}
    assert WKV7_IMPLS == {
        "reference": wkv7_reference.wkv7_reference,
        "chunked": wkv7_chunked.wkv7_chunked,
        "step": wkv7_recurrent.wkv7_recurrent,
        "cuda": wkv7_cuda.wkv7_cuda,
    }
    assert not hasattr(wkv7_cuda, "wkv7_chunked")  # the kernels module never falls back itself
    for mod in (wkv7_reference, wkv7_chunked, wkv7_recurrent, wkv7_cuda, dispatch):
        assert mod.check_wkv7_inputs is contract.check_wkv7_inputs, mod.__name__
    assert set(kernels.__all__) >= {"check_wkv7_inputs", "WKV7_IMPLS", "WKV_FAMILIES", "wkv7_step"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_cpu_sequences_use_chunked_without_building(builds, dtype):
    assert choose_wkv_impl("cpu", (dtype,) * 6, 100, 64, family="wkv7") == "chunked"
    xs = make_inputs7(2, 40, 2, 16, with_state=True)
    y1, s1 = wkv7(*xs)
    y2, s2 = wkv7_chunked.wkv7_chunked(*xs)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert builds.calls == []


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_decode_step_uses_step(builds, device):
    assert choose_wkv_impl(device, FP32, 1, 64, family="wkv7") == "step"
    xs = make_inputs7(2, 1, 2, 16, with_state=True)
    y, s = wkv7(*xs)
    y_st, s_st = wkv7_step(*(x[:, 0] for x in xs[:-1]), xs[-1])
    torch.testing.assert_close(y[:, 0], y_st, rtol=0, atol=0)
    torch.testing.assert_close(s, s_st, rtol=0, atol=0)
    assert builds.calls == []


def test_cuda_tensors_with_built_kernels_use_cuda(builds):
    assert choose_wkv_impl("cuda", FP32, 100, 64, family="wkv7") == "cuda"
    assert choose_wkv_impl("cuda", (torch.bfloat16,) * 5 + (torch.float32,), 4096, 128, family="wkv7") == "cuda"
    assert choose_wkv_impl("cuda", (torch.float32,) * 4, 100, 64) == "cuda"
    assert builds.calls == [("wkv7", 64), ("wkv7", 128), ("wkv", 64)]


@pytest.mark.parametrize("dtypes, T, N", [(FP32, 100, 16), ((torch.float64,) * 6, 100, 64), (FP32, 0, 64)])
def test_cuda_tensors_the_kernels_dont_cover_use_chunked(builds, dtypes, T, N):
    assert choose_wkv_impl("cuda", dtypes, T, N, family="wkv7") == "chunked"
    assert builds.calls == []


def test_failed_build_warns_once_then_chunked_and_only_for_its_family(builds):
    builds.fail = True
    with pytest.warns(RuntimeWarning, match="WKV-7 CUDA kernels unavailable, using the chunked PyTorch form"):
        assert choose_wkv_impl("cuda", FP32, 100, 64, family="wkv7") == "chunked"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later calls are silent and don't try again
        assert choose_wkv_impl("cuda", FP32, 100, 64, family="wkv7") == "chunked"
        xs = make_inputs7(1, 9, 1, 64, with_state=True)
        y, s = wkv7_cuda_or_fallback(*xs)
    assert builds.calls == [("wkv7", 64)]
    y_ref, s_ref = wkv7_chunked.wkv7_chunked(*xs)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
    with pytest.warns(RuntimeWarning, match="^WKV CUDA kernels unavailable"):  # the other family tries its own
        assert choose_wkv_impl("cuda", (torch.float32,) * 4, 100, 64) == "chunked"


def test_kernels_reject_cpu_tensors_and_bad_dtypes():
    xs = make_inputs7(1, 4, 1, 64)
    with pytest.raises(ValueError, match="one CUDA device"):
        wkv7_cuda.wkv7_cuda(*xs)
    with pytest.raises(ValueError, match="unknown WKV family"):
        choose_wkv_impl("cuda", FP32, 10, 64, family="wkv9")
