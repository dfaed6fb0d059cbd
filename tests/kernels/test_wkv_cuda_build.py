"""The WKV CUDA kernels compile without a GPU (CI: a CUDA build of torch and nvcc, no device).

* `test_kernels_compile` runs nvcc on cuda/wkv_cuda.cu alone (it needs no torch headers): one
  architecture (sm_90), head size 64, bf16 only (-DWKV_FAST_BUILD; every template is still
  compiled). A few seconds.
* `test_compile_errors_fail` checks that a broken copy of the source does fail, so the test above
  cannot pass vacuously.
* `test_extension_builds_and_loads` (slow: ~40 s on 2 shared cores, mostly the torch headers of
  the binding) builds the real extension through `rwkv_mm.kernels.wkv_cuda.build` and loads its
  torch ops.

Skipped only when torch has no CUDA build or no CUDA toolkit is found. The remaining tests check
the build errors' messages and the fallback to the chunked form (decided by the dispatcher in
`rwkv_mm.kernels.wkv`), with no compiler at all.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from rwkv_mm.kernels import wkv as dispatch
from rwkv_mm.kernels import wkv_cuda
from rwkv_mm.kernels.wkv import wkv_cuda_or_fallback
from rwkv_mm.kernels.wkv_chunked import wkv_chunked
from rwkv_mm.kernels.wkv_cuda import WkvBuildError, build, find_cuda_home

CUDA_HOME = find_cuda_home() if torch.version.cuda is not None else None
needs_nvcc = pytest.mark.skipif(CUDA_HOME is None, reason="needs a CUDA build of torch and a CUDA toolkit (nvcc)")
ARCH = "90"


def nvcc_compile(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """nvcc -c on one .cu (include path: cuda/), head size 64, bf16 only, sm_90."""
    assert CUDA_HOME is not None
    cmd = [
        str(CUDA_HOME / "bin" / "nvcc"), "-c", str(source), "-o", str(out), "-std=c++17", "-O3",
        f"-I{wkv_cuda.SOURCE_DIR}", "-DWKV_N=64", "-DWKV_FAST_BUILD",
        f"-gencode=arch=compute_{ARCH},code=sm_{ARCH}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


@needs_nvcc
def test_kernels_compile(tmp_path):
    res = nvcc_compile(wkv_cuda.SOURCE_DIR / "wkv_cuda.cu", tmp_path / "wkv_cuda.o")
    assert res.returncode == 0, f"nvcc failed:\n{res.stdout}\n{res.stderr}"
    assert (tmp_path / "wkv_cuda.o").stat().st_size > 0


@needs_nvcc
def test_compile_errors_fail(tmp_path):
    broken = tmp_path / "wkv_cuda.cu"
    src = (wkv_cuda.SOURCE_DIR / "wkv_cuda.cu").read_text()
    broken.write_text(src.replace("acc = fmaf(qs[c], s, acc);", "acc = fmaf(qs[c], s, undeclared_name);"))
    assert broken.read_text() != src
    res = nvcc_compile(broken, tmp_path / "broken.o")
    assert res.returncode != 0 and "undeclared_name" in res.stdout + res.stderr


@needs_nvcc
@pytest.mark.slow
def test_extension_builds_and_loads(tmp_path):
    ops = build(64, arch=(ARCH,), fast=True, build_directory=tmp_path / "build")
    assert ops.head_size() == 64
    assert "Tensor? s0" in str(ops.forward.default._schema)
    assert str(ops.backward.default._schema).endswith("-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")


def test_unsupported_head_size_is_a_value_error():
    with pytest.raises(ValueError, match="head size 48"):
        build(48)


def test_cpu_only_torch_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(WkvBuildError, match="CPU-only"):
        build(64, arch=(ARCH,))


def test_missing_toolkit_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(wkv_cuda, "find_cuda_home", lambda: None)
    with pytest.raises(WkvBuildError, match="CUDA_HOME"):
        build(64, arch=(ARCH,))


def test_missing_gpu_and_arch_is_named(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(WkvBuildError, match="arch"):
        wkv_cuda._arch_flags(None)
    assert wkv_cuda._arch_flags(["9.0", "80"]) == [
        "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_80,code=sm_80"]


def _inputs(N: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    r, k, v = (torch.randn(1, 5, 2, N, generator=g, dtype=dtype) for _ in range(3))
    w = -torch.rand(1, 5, 2, N, generator=g, dtype=dtype)
    return r, k, v, w, torch.randn(2, N, generator=g, dtype=dtype), None


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    def failing_build(head_size: int, **_: object):
        raise WkvBuildError("no CUDA toolkit found (test)")

    monkeypatch.setattr(wkv_cuda, "build", failing_build)
    monkeypatch.setattr(dispatch, "_failed_builds", {})
    inputs = _inputs(64)
    with pytest.warns(RuntimeWarning, match="chunked PyTorch form: no CUDA toolkit found"):
        y, s = wkv_cuda_or_fallback(*inputs)
    y_ref, s_ref = wkv_chunked(*inputs)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(s, s_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        wkv_cuda_or_fallback(*inputs)


@pytest.mark.parametrize("N, dtype", [(16, torch.float32), (64, torch.float64)])
def test_uncovered_cases_use_chunked_without_building(monkeypatch, N, dtype):
    monkeypatch.setattr(wkv_cuda, "build", lambda *a, **k: pytest.fail("must not build"))
    inputs = _inputs(N, dtype)
    y, s = wkv_cuda_or_fallback(*inputs)
    torch.testing.assert_close(y, wkv_chunked(*inputs)[0])
