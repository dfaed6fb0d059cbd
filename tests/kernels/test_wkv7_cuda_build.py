"""The WKV-7 CUDA kernels compile without a GPU (CI: a CUDA build of torch and nvcc, no device).

As test_wkv_cuda_build.py for cuda/wkv7_cuda.cu: nvcc alone on the kernels (sm_90, head size 64,
bf16 only; a few seconds), a broken copy that must fail, and (slow) the real extension built with
`rwkv_mm.kernels.wkv7_cuda.build7` and loaded. Skipped only without a CUDA torch and toolkit.
"""

from __future__ import annotations

import pytest
import torch
from test_wkv_cuda_build import ARCH, needs_nvcc, nvcc_compile

from rwkv_mm.kernels import wkv_cuda
from rwkv_mm.kernels.wkv7_cuda import WkvBuildError, build7

SOURCE = wkv_cuda.SOURCE_DIR / "wkv7_cuda.cu"


@needs_nvcc
def test_kernels_compile(tmp_path):
    res = nvcc_compile(SOURCE, tmp_path / "wkv7_cuda.o")
    assert res.returncode == 0, f"nvcc failed:\n{res.stdout}\n{res.stderr}"
    assert (tmp_path / "wkv7_cuda.o").stat().st_size > 0


@needs_nvcc
def test_compile_errors_fail(tmp_path):
    broken = tmp_path / "wkv7_cuda.cu"
    src = SOURCE.read_text()
    broken.write_text(src.replace("dv = fmaf(g_row[j], s_k[j], dv);", "dv = fmaf(g_row[j], s_k[j], undeclared_name);"))
    assert broken.read_text() != src
    res = nvcc_compile(broken, tmp_path / "broken.o")
    assert res.returncode != 0 and "undeclared_name" in res.stdout + res.stderr


@needs_nvcc
@pytest.mark.slow
def test_extension_builds_and_loads(tmp_path):
    ops = build7(64, arch=(ARCH,), fast=True, build_directory=tmp_path / "build")
    assert ops.head_size() == 64
    assert "Tensor? s0" in str(ops.forward.default._schema)
    assert str(ops.backward.default._schema).endswith("-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")


def test_unsupported_head_size_is_a_value_error():
    with pytest.raises(ValueError, match="head size 48 is not supported by the WKV-7 CUDA kernels"):
        build7(48)


def test_cpu_only_torch_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(WkvBuildError, match="CPU-only.*WKV-7"):
        build7(64, arch=(ARCH,))
