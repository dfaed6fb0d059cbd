"""AudioRWKV checks that compare the code with outside facts rather than with itself.

- The GoldFinch encoder's key cache: `test_audio_goldfinch.py` checks shapes, gradients and
  non-causality, all of which hold whichever layer the cache is written from. Here the keys every
  GOLD block receives are recomputed by hand from the paper's TokenCat, rms_norm(W_b [x0; W_a h]),
  with h the output of the last Finch-C2 block and x0 = ln0(patch embeddings).
- AST's normalisation statistics: the existing test normalises with the imported constants, so a
  mistyped constant passes it; here they are pinned to AST's published AudioSet values.
"""

from __future__ import annotations

import torch

from rwkv_mm.audio.features import AST_MEAN, AST_STD, AudioFeatures
from rwkv_mm.audio.fbank import FbankConfig, reference_fbank
from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig
from rwkv_mm.backbone import RWKVConfig


def goldfinch_tagger(n_layer: int = 5) -> AudioRWKV:
    """5 layers: Finch-C2 blocks 0..2 (s = int(2L/3) = 3), GOLD blocks 3..4; weights moved off
    their initialisation (zeroed outputs and LoRAs would hide which layer feeds the cache)."""
    torch.manual_seed(0)
    model = AudioRWKV(AudioRWKVConfig(
        backbone=RWKVConfig(version="goldfinch", n_layer=n_layer, n_embd=32, head_size=16, dim_ffn=128,
                            tm_lora_rank=4, decay_lora_rank=4),
        num_classes=7, num_mel_bins=32, target_frames=48, patch=(8, 8), stride=(8, 8))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def run_with_hooks(model: AudioRWKV, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], dict[int, tuple], torch.Tensor]:
    """(every block's output, every block's positional inputs, ln0's output) of one forward pass."""
    outputs, inputs, x0 = {}, {}, {}
    hooks = [model.ln0.register_forward_hook(lambda m, a, out: x0.__setitem__(0, out))]
    for i, block in enumerate(model.blocks):
        hooks.append(block.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out)))
        hooks.append(block.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return outputs, inputs, x0[0]


def tokencat_keys(model: AudioRWKV, x0: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Paper §3.3: c = W_a h (D -> D/16), key = rms_norm(W_b [x0; c])."""
    c = h @ model.w_kv_cache_a.weight.T
    k = torch.cat((x0, c), dim=-1) @ model.w_kv_cache_b.weight.T
    return k * torch.rsqrt(k.square().mean(-1, keepdim=True))


def test_goldfinch_encoder_keys_come_from_the_last_finch_c2_block():
    model = goldfinch_tagger()
    s = model.first_gold_layer
    assert s == 3
    outputs, inputs, x0 = run_with_hooks(model, torch.randn(2, 48, 32))
    want = tokencat_keys(model, x0, outputs[s - 1])
    for i in range(s, 5):  # every GOLD block gets the same keys and x0
        _, _, keys, x0_in = inputs[i]
        torch.testing.assert_close(keys, want, rtol=0, atol=1e-5)
        assert torch.equal(x0_in, x0)
    for i in range(s - 1):  # and they are not those of any earlier layer
        other = tokencat_keys(model, x0, outputs[i])
        assert (other - want).abs().max() > 1e-2


def test_goldfinch_encoder_cache_ignores_the_gold_blocks():
    """Changing a GOLD block leaves the keys it (and every GOLD block) receives unchanged."""
    x = torch.randn(1, 48, 32)
    model = goldfinch_tagger()
    _, before, _ = run_with_hooks(model, x)
    with torch.no_grad():
        model.blocks[3].att.query.weight.mul_(3.0)
        model.blocks[3].ffn.value.weight.mul_(3.0)
    _, after, _ = run_with_hooks(model, x)
    assert torch.equal(before[4][2], after[4][2])
    assert not torch.equal(before[4][0], after[4][0])  # the block's input did change


def test_ast_normalisation_uses_ast_published_audioset_statistics():
    """AST (Gong et al. 2021) normalises AudioSet fbank with mean -4.2677393, std 4.5689974, as
    (x - mean) / (2·std)."""
    assert (AST_MEAN, AST_STD) == (-4.2677393, 4.5689974)
    cfg = FbankConfig(num_mel_bins=32)
    wave = torch.randn(1, 8000) * 0.1
    raw = reference_fbank(wave[0], cfg)
    got = AudioFeatures(cfg, target_frames=None)(wave)[0]
    torch.testing.assert_close(got, (raw + 4.2677393) / 9.1379948, rtol=0, atol=1e-4)
