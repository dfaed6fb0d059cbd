"""Batched Kaldi fbank against torchaudio.compliance.kaldi.fbank (the reference), clip by clip."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from rwkv_mm.audio import fbank_native
from rwkv_mm.audio.fbank import FbankConfig, KaldiFbank, kaldi_mel_banks, reference_fbank

TOL = 1e-3  # the contract: within 1e-3 of torchaudio's Kaldi fbank (log domain)


def require_native() -> None:
    """The compiled loops must build wherever there is a C compiler (CI has one)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the fbank uses its torch path")
    assert fbank_native.load() is not None, "fbank_native.c did not compile"


def signals(n: int, seed: int = 0) -> torch.Tensor:
    """[5, n]: white noise, a tone, a chirp plus noise, near silence, a random walk (strong lows)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return torch.stack([
        0.3 * torch.randn(n, generator=g),
        0.5 * torch.sin(2 * math.pi * 440 * t),
        0.4 * torch.sin(2 * math.pi * (200 + 1500 * t) * t) + 0.01 * torch.randn(n, generator=g),
        1e-4 * torch.randn(n, generator=g),
        torch.randn(n, generator=g).cumsum(0) * 1e-3,
    ])


@pytest.mark.parametrize("cfg", [
    FbankConfig(),  # AST: 128 mel, hanning
    FbankConfig(num_mel_bins=64, window="hamming", low_freq=50, high_freq=-400),
    FbankConfig(num_mel_bins=23, window="povey", sample_rate=8000),
    FbankConfig(num_mel_bins=80, sample_rate=22050, frame_shift_ms=12.5),
    FbankConfig(num_mel_bins=40, window="rectangular", preemphasis=0.0, remove_dc_offset=False),
], ids=["ast", "hamming64", "povey8k", "22k", "rect-raw"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_batched_matches_torchaudio_per_clip(cfg, native):
    if native:
        require_native()
    waves = signals(int(1.3 * cfg.sample_rate) + 17)
    batched = KaldiFbank(cfg, native=native)(waves)  # [5, T, M]
    for i, wave in enumerate(waves):
        ref = reference_fbank(wave, cfg)
        assert batched[i].shape == ref.shape
        diff = (batched[i] - ref).abs().max().item()
        assert diff <= TOL, f"signal {i}: max diff {diff}"


def voice(n: int, seed: int = 0) -> torch.Tensor:
    """[n] at 16 kHz, a recording-like signal: a voiced sound (f0 140 ± 20 Hz, 39 harmonics under a
    formant near 700 Hz, syllable-rate envelope), a little noise, a DC offset and a slow drift."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / 16000
    phase = 2 * math.pi * torch.cumsum(140 + 20 * torch.sin(2 * math.pi * 3 * t), 0) / 16000
    harmonics = sum((0.6 / k) * torch.sin(k * phase) * math.exp(-((k * 140 - 700) / 900) ** 2) for k in range(1, 40))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t).clamp(min=0)
    drift = 0.05 + 0.02 * torch.sin(2 * math.pi * 0.7 * t)
    return (0.3 * envelope * harmonics + 0.01 * torch.randn(n, generator=g, dtype=torch.float64) + drift).float()


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_default_features_are_asts_literal_fbank_call(native):
    """The defaults themselves (pre-emphasis 0.97, per-frame DC removal, hanning, 20 Hz .. Nyquist,
    25/10 ms, 128 bins) against AST's own call (YuanGongND/ast src/dataloader.py, `_wav2fbank`:
    the clip's mean removed, then the fbank with these literal arguments). The other tests hand
    the same FbankConfig to both sides, so only this one sees a changed default."""
    import torchaudio.compliance.kaldi as kaldi

    from rwkv_mm.audio.config import AudioFeaturesConfig

    if native:
        require_native()
    wave = voice(2 * 16000 + 77)
    ast = kaldi.fbank((wave - wave.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    for fbank in (KaldiFbank(native=native), AudioFeaturesConfig().build().fbank):
        fbank.native = native
        out = fbank(wave)
        assert out.shape == ast.shape == (198, 128)
        diff = (out - ast).abs().max().item()
        assert diff <= TOL, f"max diff {diff}"


def test_ten_second_clip_shape_and_ast_frame_count():
    cfg = FbankConfig()
    wave = signals(160000)[0]
    out = KaldiFbank(cfg)(wave)  # 1-D in → [T, M] out
    assert out.shape == (998, 128) == reference_fbank(wave, cfg).shape
    assert cfg.num_frames(160000) == 998 and cfg.num_samples(1024) == 164080
    assert cfg.num_frames(cfg.num_samples(1024)) == 1024 and cfg.num_frames(399) == 0


def test_filters_match_torchaudio_mel_banks():
    import torchaudio.compliance.kaldi as kaldi

    for cfg in (FbankConfig(), FbankConfig(num_mel_bins=64, low_freq=50, high_freq=7000)):
        ref, _ = kaldi.get_mel_banks(cfg.num_mel_bins, cfg.n_fft, float(cfg.sample_rate), cfg.low_freq,
                                     cfg.high_freq, 100.0, -500.0, 1.0)
        ours = kaldi_mel_banks(cfg)  # [n_fft/2 + 1, M]
        assert ours.shape == (cfg.n_fft // 2 + 1, cfg.num_mel_bins)
        assert torch.all(ours[-1] == 0)  # Nyquist bin unused, as in Kaldi
        torch.testing.assert_close(ours[:-1].T, ref, rtol=0, atol=1e-6)


def test_silence_gives_log_epsilon_and_fp64_input_is_supported():
    cfg = FbankConfig(num_mel_bins=32)
    out = KaldiFbank(cfg)(torch.zeros(2, 4000))
    assert torch.allclose(out, torch.tensor(math.log(torch.finfo(torch.float32).eps)))
    wave = signals(8000)[0].double()
    out64 = KaldiFbank(cfg)(wave)
    assert out64.dtype == torch.float64
    assert (out64 - reference_fbank(wave, cfg)).abs().max() < TOL


def test_errors_name_the_problem():
    fb = KaldiFbank(FbankConfig())
    with pytest.raises(ValueError, match="shorter than one frame"):
        fb(torch.zeros(1, 100))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        fb(torch.zeros(1, 2, 1000))
    with pytest.raises(ValueError, match="window"):
        FbankConfig(window="kaiser")
    with pytest.raises(ValueError, match="low_freq=9000"):
        FbankConfig(low_freq=9000)
    with pytest.raises(ValueError, match="preemphasis=nan"):
        FbankConfig(preemphasis=float("nan"))


def test_autocast_does_not_lower_precision():
    wave = signals(8000)[:2]
    fb = KaldiFbank(FbankConfig(num_mel_bins=32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fb(wave)
    assert out.dtype == torch.float32
    assert (out - fb(wave)).abs().max() == 0


def test_blocks_and_banded_mel_product_change_nothing():
    cfg = FbankConfig(num_mel_bins=64)
    waves = signals(9000)
    one_block = KaldiFbank(cfg, block_frames=10**6)(waves)
    per_clip = KaldiFbank(cfg, block_frames=1)(waves)
    torch.testing.assert_close(one_block, per_clip, rtol=0, atol=1e-6)
    fb = KaldiFbank(cfg)
    for lo, hi, m0, m1 in fb.groups:  # every weight of a group lies inside its bin range
        band = fb.mel_banks[:, m0:m1]
        assert band[:lo].abs().sum() == 0 and band[hi:].abs().sum() == 0
    assert [g[2] for g in fb.groups] == list(range(0, 64, 16))


@pytest.mark.parametrize("cfg", [FbankConfig(), FbankConfig(window="hamming", sample_rate=8000),
                                 FbankConfig(preemphasis=0.0, remove_dc_offset=False)],
                         ids=["ast", "hamming8k", "raw"])
def test_native_frames_are_bit_identical_to_the_torch_steps(cfg):
    """The C loop rounds each step as the separate torch operations do: the FFT input is equal
    bit for bit (the exactness the near-silent low mel bins need), at a frame offset too."""
    require_native()
    fb = KaldiFbank(cfg)
    waves = signals(cfg.num_samples(300))
    W, shift, t0, T = cfg.window_size, cfg.window_shift, 7, 250
    frames = waves[:, t0 * shift:(t0 + T - 1) * shift + W].unfold(-1, W, shift)  # [5, T, W]
    expected = torch.empty(5, T, cfg.n_fft)
    fb._prepare_frames(frames, expected)
    got = torch.full((5, T, cfg.n_fft), float("nan"))
    means = frames.mean(-1) if cfg.remove_dc_offset else None
    fbank_native.prepare_frames(fbank_native.load(), waves, t0, T, shift, W, cfg.n_fft, means,
                                cfg.preemphasis, fb.window, got)
    assert torch.equal(got, expected)


def test_native_mel_energies_match_the_dense_product():
    require_native()
    cfg = FbankConfig(num_mel_bins=80)
    fb = KaldiFbank(cfg)
    spectrum = torch.randn(37, cfg.n_fft // 2 + 1, 2)  # 37 rows: tiles of 8 and a remainder
    out = torch.full((37, 100), float("nan"))  # row stride 100, as a slice of a wider output
    fbank_native.mel_energies(fbank_native.load(), spectrum, fb.bands, out[:, 10:90])
    dense = spectrum.square().sum(-1) @ fb.mel_banks
    torch.testing.assert_close(out[:, 10:90], dense, rtol=1e-5, atol=1e-6)
    assert out[:, :10].isnan().all() and out[:, 90:].isnan().all()  # nothing written outside


def test_native_switch_and_the_fallback_give_the_same_features(monkeypatch):
    waves = signals(20000)
    torch_path = KaldiFbank(native=False)(waves)
    monkeypatch.setattr(fbank_native, "_tried", True)  # as when no compiler / RWKV_MM_NATIVE_FBANK=0
    monkeypatch.setattr(fbank_native, "_lib", None)
    fallback = KaldiFbank()(waves)
    assert torch.equal(fallback, torch_path)


def test_threads_blocks_and_native_agree():
    cfg = FbankConfig(num_mel_bins=64)
    waves = signals(30000)
    one = KaldiFbank(cfg, block_frames=10**6)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # three Python threads share the blocks
    try:
        threaded = KaldiFbank(cfg, block_frames=50)(waves)
        assert torch.get_num_threads() == 3  # restored after the call
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(threaded, one(waves), rtol=0, atol=1e-6)
    torch.testing.assert_close(KaldiFbank(cfg, native=False)(waves), one(waves), rtol=0, atol=2e-6)
