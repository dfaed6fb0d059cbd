"""Issue 13, item 2: native code built at run time is never loaded from where someone else could
have put it (rwkv_mm.kernels.native_cache, used by the fbank's C loops and the WKV CUDA build).

A stub library whose constructor creates a marker file is planted under the exact name
`fbank_native.load()` looks for, with a digest sidecar that matches it, in (a) a world-writable
cache folder, (b) a cache folder owned by another user, (b') the user's own folder reached through
a symbolic link owned by another user, and (c) the user's own private folder with a wrong or
missing digest. In every case the stub must not run and the fbank must still give the torch
path's numbers (a stub with the right symbols would silently change them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from rwkv_mm.audio import fbank_native
from rwkv_mm.audio.fbank import KaldiFbank
from rwkv_mm.kernels import native_cache, wkv_cuda

needs_cc = pytest.mark.skipif(fbank_native._compiler() is None, reason="needs a C compiler")
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="needs root to give files to another user")
NOBODY = 65534

STUB = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *path = getenv("RWKV_MM_TEST_MARKER");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) { fputs("planted library ran\n", f); fclose(f); }
}
void fbank_prepare_frames(void) {}
void fbank_mel_energies(void) {}
"""


@pytest.fixture(scope="module")
def stub_library(tmp_path_factory) -> Path:
    """A shared library with the fbank's two symbols (doing nothing) and a marker-writing constructor."""
    folder = tmp_path_factory.mktemp("stub")
    (folder / "stub.c").write_text(STUB)
    compiler = fbank_native._compiler()
    assert compiler is not None
    subprocess.run([compiler[0], "-shared", "-fPIC", str(folder / "stub.c"), "-o", str(folder / "stub.so")],
                   check=True)
    return folder / "stub.so"


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """fbank_native as in a new process; the stub's marker path; RWKV_MM_CACHE under tmp_path."""
    monkeypatch.setattr(fbank_native, "_tried", False)
    monkeypatch.setattr(fbank_native, "_lib", None)
    monkeypatch.setattr(native_cache, "_warned", set())
    marker = tmp_path / "PLANTED_RAN"
    monkeypatch.setenv("RWKV_MM_TEST_MARKER", str(marker))
    monkeypatch.delenv("RWKV_MM_NATIVE_FBANK", raising=False)
    return marker


def expected_name() -> str:
    return fbank_native.library_name(fbank_native._compiler()[1])


def plant(stub: Path, folder: Path, digest: str | None = "match") -> Path:
    """Copy the stub into `folder` under the expected name, with a sidecar digest that matches it
    (or `digest` verbatim, or none)."""
    target = folder / expected_name()
    shutil.copyfile(stub, target)
    os.chmod(target, 0o755)
    if digest is not None:
        text = native_cache.file_digest(target) if digest == "match" else digest
        (folder / (target.name + native_cache.DIGEST_SUFFIX)).write_text(text + "\n")
    return target


def assert_fbank_right(marker: Path, planted: Path) -> None:
    """The stub did not run, the native loops were built afresh, and they give the torch numbers."""
    lib = fbank_native.load()
    assert not marker.exists(), f"the planted library ran: {marker.read_text()}"
    assert lib is not None, "the real library should have been built elsewhere"
    assert Path(lib._name) != planted
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(3, 8000, generator=g) * 0.1  # [B, L]
    native, reference = KaldiFbank()(waves), KaldiFbank(native=False)(waves)
    torch.testing.assert_close(native, reference, rtol=0, atol=2e-6)


@needs_cc
def test_world_writable_cache_is_not_trusted(fresh, stub_library, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    planted = plant(stub_library, cache)
    monkeypatch.setenv("RWKV_MM_CACHE", str(cache))
    with pytest.warns(RuntimeWarning, match="writable by other users"):
        assert_fbank_right(fresh, planted)
    assert sorted(p.name for p in cache.iterdir()) == sorted([planted.name, planted.name + ".sha256"])


@needs_cc
@needs_root
def test_cache_owned_by_another_user_is_not_trusted(fresh, stub_library, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    planted = plant(stub_library, cache)
    for p in (cache, *cache.iterdir()):
        os.chown(p, NOBODY, NOBODY)
    monkeypatch.setenv("RWKV_MM_CACHE", str(cache))
    with pytest.warns(RuntimeWarning, match="owned by another user"):
        assert_fbank_right(fresh, planted)


@needs_cc
@needs_root
def test_symlink_owned_by_another_user_is_not_followed(fresh, stub_library, tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    planted = plant(stub_library, real)  # this user's own files: only the link is foreign
    link = tmp_path / "link"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    monkeypatch.setenv("RWKV_MM_CACHE", str(link))
    with pytest.warns(RuntimeWarning, match="symbolic link owned by another user"):
        assert_fbank_right(fresh, planted)


@needs_cc
@pytest.mark.parametrize("digest", ["0" * 64, None], ids=["wrong-digest", "no-digest"])
def test_private_cache_with_a_digest_mismatch_rebuilds(fresh, stub_library, tmp_path, monkeypatch, digest):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    planted = plant(stub_library, cache, digest)
    monkeypatch.setenv("RWKV_MM_CACHE", str(cache))
    assert_fbank_right(fresh, planted)
    # rebuilt in place with its digest, so the next process loads it from the cache
    assert native_cache.verified(planted)
    assert planted.read_bytes() != stub_library.read_bytes()
    monkeypatch.setattr(fbank_native, "_tried", False)
    assert Path(fbank_native.load()._name) == planted


@needs_cc
def test_planted_symlink_in_private_cache_is_rebuilt(fresh, stub_library, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    target = cache / expected_name()
    target.symlink_to(stub_library)
    (cache / (target.name + ".sha256")).write_text(native_cache.file_digest(stub_library) + "\n")
    monkeypatch.setenv("RWKV_MM_CACHE", str(cache))
    assert_fbank_right(fresh, stub_library)
    assert not target.is_symlink() and native_cache.verified(target)


@needs_cc
def test_library_name_hashes_source_compiler_and_flags(monkeypatch):
    name = expected_name()
    assert fbank_native.library_name("another compiler 1.0") != name
    monkeypatch.setattr(fbank_native, "FLAGS", [*fbank_native.FLAGS, "-DX"])
    assert expected_name() != name


def test_folder_rules(tmp_path):
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    assert native_cache.why_unsafe(own) is None
    os.chmod(own, 0o770)
    assert "writable by other users" in native_cache.why_unsafe(own)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # a non-sticky world-writable folder above: our folder can be swapped
    (shared / "c").mkdir(mode=0o700)
    assert "folder above it" in native_cache.why_unsafe(shared / "c")
    os.chmod(shared, 0o1777)  # sticky, like /tmp: fine
    assert native_cache.why_unsafe(shared / "c") is None
    assert "does not exist" in native_cache.why_unsafe(tmp_path / "missing")
    made = native_cache.private_dir(tmp_path / "a" / "b")
    assert made == tmp_path / "a" / "b" and (made.stat().st_mode & 0o777) == 0o700
    assert (made.parent.stat().st_mode & 0o777) == 0o700


def test_private_dir_falls_back_to_a_private_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(native_cache, "_warned", set())
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.warns(RuntimeWarning, match="private temp folder"):
        folder = native_cache.private_dir(shared, "a test build")
    assert folder is not None and not folder.is_relative_to(shared)
    assert native_cache.why_unsafe(folder) is None


def test_wkv_cuda_build_folder_follows_the_same_rule(tmp_path, monkeypatch):
    """The CUDA extension is not built in (nor loaded from) a world-writable TORCH_EXTENSIONS_DIR."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(native_cache, "_warned", set())
    shared = tmp_path / "torch_extensions"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(shared))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(wkv_cuda, "find_cuda_home", lambda: tmp_path)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)
    monkeypatch.setattr(wkv_cuda, "_ensure_ninja", lambda: None)
    seen = {}

    def fake_load(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before compiling (test)")

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    with pytest.warns(RuntimeWarning, match="writable by other users"), pytest.raises(wkv_cuda.WkvBuildError):
        wkv_cuda.build(64, arch=("90",), fast=True)
    used = Path(seen["build_directory"])
    assert not used.is_relative_to(shared) and native_cache.why_unsafe(used) is None
    # a private folder is used as asked
    private = tmp_path / "private_ext"
    assert wkv_cuda.build_directory_for("x", private) == private
    assert native_cache.why_unsafe(private) is None
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(private))
    assert wkv_cuda.build_directory_for("y", None) == private / "y"


def test_no_compiler_keeps_the_torch_fallback(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("RWKV_MM_CACHE", str(tmp_path / "cache"))
    assert fbank_native.load() is None
    waves = torch.randn(2, 4000, generator=torch.Generator().manual_seed(1)) * 0.1
    torch.testing.assert_close(KaldiFbank()(waves), KaldiFbank(native=False)(waves), rtol=0, atol=0)
