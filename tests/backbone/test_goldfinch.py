"""GoldFinch: config, sizes (paper labels), cached decoding = full forward, checkpoints, generate."""

from __future__ import annotations

import math

import pytest
import torch

from rwkv_mm.backbone import (RWKV, GoldFinch, GoldFinchState, RWKVConfig, SamplingConfig,
                              build_backbone, detect_version, generate_tokens, load_model, prefill,
                              read_state_dict, save_model)
from rwkv_mm.backbone.goldfinch.gold import apply_rope, causal_mask, rms_norm
from rwkv_mm.cli import main


def gf_config(n_layer: int = 4, n_embd: int = 64, head_size: int = 16, vocab_size: int = 97,
              **kwargs) -> RWKVConfig:
    return RWKVConfig(version="goldfinch", n_layer=n_layer, n_embd=n_embd, head_size=head_size,
                      vocab_size=vocab_size, **kwargs)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights of a realistic scale, so that every term (zero-initialised LoRAs and output
    projections included) matters in the comparisons."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        r = torch.randn(p.shape, generator=g)
        if leaf == "time_decay":
            p.copy_(torch.rand(p.shape, generator=g) * 5 - 4)  # per-step decay ~0.98 .. ~0.07
        elif leaf.startswith("time_maa_") and p.shape[:2] == (1, 1):
            p.copy_(torch.rand(p.shape, generator=g))
        elif leaf.endswith("_w1"):
            p.copy_(r * 0.5 / math.sqrt(p.shape[0]))
        elif leaf.endswith("_w2"):
            p.copy_(r * 0.1)
        elif name.startswith("emb."):
            p.copy_(r)
        elif leaf == "weight" and p.dim() == 1:
            p.copy_(1 + 0.1 * r)
        elif leaf == "bias":
            p.copy_(0.1 * r)
        elif p.dim() == 2:
            p.copy_(r / math.sqrt(p.shape[1]))
        else:
            raise AssertionError(f"randomize_: no rule for {name} {tuple(p.shape)}")
    return model


def tiny_goldfinch(seed: int = 0, **kwargs) -> GoldFinch:
    torch.manual_seed(seed)
    return randomize_(GoldFinch(gf_config(**kwargs)), seed).eval()


def count_params(config: RWKVConfig) -> int:
    with torch.device("meta"):
        model = build_backbone(config)
    return sum(p.numel() for p in model.parameters())


# ---- config and sizes ----------------------------------------------------------------------------


def test_config_defaults_follow_the_goldfinch_code():
    cfg = gf_config(n_layer=24, n_embd=2048, head_size=64, vocab_size=65536)
    assert cfg.first_gold_layer == 16 == int(24 * 2 / 3) and cfg.n_gold_layer == 8
    assert cfg.key_cache_dim == 128 and cfg.gold_lora_rank == 128
    assert (cfg.tm_lora_rank, cfg.decay_lora_rank, cfg.gate, cfg.rope_base) == (32, 64, False, None)
    assert gf_config(n_layer=6).first_gold_layer == 4
    assert gf_config(n_embd=256, head_size=64).gold_lora_rank == 64  # max(D/16, 64)
    assert RWKVConfig.from_dict(cfg.to_dict()) == cfg
    assert "n_gold_layer" not in RWKVConfig(version="6").to_dict()  # Eagle/Finch dicts unchanged
    assert RWKVConfig(version="6").gate is True


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_layer=1), "at least 2 layers"),
    (dict(n_gold_layer=4), "n_gold_layer"),
    (dict(n_gold_layer=0), "n_gold_layer"),
    (dict(gate=True), "no gate"),
    (dict(rope_base=0.5), "rope_base"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gf_config(**kwargs)


def test_goldfinch_options_rejected_for_finch_and_rwkv_rejects_goldfinch():
    with pytest.raises(ValueError, match="GoldFinch option"):
        RWKVConfig(version="6", key_cache_dim=8)
    with pytest.raises(ValueError, match="build_backbone"):
        RWKV(gf_config())
    assert isinstance(build_backbone(gf_config()), GoldFinch)
    assert isinstance(build_backbone(RWKVConfig(version="6", n_layer=1, n_embd=64, head_size=16,
                                                vocab_size=10)), RWKV)


def goldfinch_formula(D: int, L: int, V: int, n_gold: int) -> int:
    """Parameters with F = 3.5·D, LoRA ranks 32/64, cache width D/16, GOLD LoRA rank r."""
    r, Dc = max(D // 16, 64), D // 16
    finch_c2 = 12 * D * D + 591 * D  # 4D² + 585D time mix, 8D² + 2D channel mix, 4D LayerNorms
    gold = 10 * D * D + 211 * D + 4 * r * D  # 2D² + (205 + 4r)D time mix, channel mix, norms
    return (L - n_gold) * finch_c2 + n_gold * gold + 2 * D * V + 4 * D + D * D + 2 * D * Dc


@pytest.mark.parametrize("D,L,V", [(64, 3, 100), (512, 6, 128), (2048, 24, 65536)])
def test_param_count_equals_formula(D, L, V):
    cfg = gf_config(n_layer=L, n_embd=D, head_size=64 if D % 64 == 0 else 16, vocab_size=V,
                    dim_ffn=int(3.5 * D))
    assert count_params(cfg) == goldfinch_formula(D, L, V, cfg.n_gold_layer)


def test_paper_sizes_goldfinch_1b445_and_finch_1b600():
    """The GoldFinch paper's labels for its L24 D2048 models (World vocabulary)."""
    n_gf = count_params(gf_config(n_layer=24, n_embd=2048, head_size=64, vocab_size=65536))
    n_finch = count_params(RWKVConfig(version="6", n_layer=24, n_embd=2048, vocab_size=65536))
    assert n_gf == 1_445_224_448 and round(n_gf / 1e9, 3) == 1.445
    assert round(n_finch / 1e9, 3) == 1.600


# ---- building blocks -----------------------------------------------------------------------------


def test_rms_norm_and_causal_mask():
    x = torch.randn(3, 5, 16)
    y = rms_norm(x)
    assert torch.allclose(y.square().mean(-1), torch.ones(3, 5), atol=1e-5)
    assert rms_norm(torch.zeros(2, 8)).abs().max() == 0  # the zero token shift stays zero
    m = causal_mask(2, 4, torch.device("cpu"))
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_rope_is_relative():
    """Rotating q at position p and k at position j leaves q·k depending on p - j only."""
    q, k = torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8)
    a = (apply_rope(q, 7, 100.0) * apply_rope(k, 3, 100.0)).sum(-1)
    b = (apply_rope(q, 24, 100.0) * apply_rope(k, 20, 100.0)).sum(-1)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(apply_rope(q, 0, 100.0), q)


def test_default_init_runs_and_follows_the_code():
    torch.manual_seed(0)
    model = GoldFinch(gf_config(n_layer=3))
    L = 3
    for i, block in enumerate(model.blocks):
        assert torch.allclose(block.att.ln_x.weight, torch.full((64,), ((i + 1) / L) ** 0.7))
        assert block.att.output.weight.abs().max() == 0 and block.ffn.value.weight.abs().max() == 0
        lora_in = block.att.time_maa_q_w1 if block.is_gold else block.att.time_maa_w1
        assert lora_in.abs().max() == 0
    assert model.blocks[2].is_gold and not model.blocks[1].is_gold
    logits, _ = model(torch.randint(0, 97, (2, 9)))
    assert logits.shape == (2, 9, 97) and torch.isfinite(logits).all()


def test_every_parameter_gets_a_gradient():
    """No parameter sits unused (DDP would refuse it); the cache path trains W_a and W_b."""
    model = tiny_goldfinch().train()
    logits, _ = model(torch.randint(0, 97, (2, 12)))
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing


# ---- cached decoding equals the full forward pass ------------------------------------------------


@pytest.mark.parametrize("keep_kv_memo,rope", [(True, False), (False, False), (True, True)])
def test_cached_decoding_equals_full_forward(keep_kv_memo, rope):
    """Prefill (Finch-C2 over the prompt, GOLD over the last window) then token-by-token decoding
    gives the logits of one full forward pass over the whole sequence (fp32)."""
    model = tiny_goldfinch(rope_base=500.0 if rope else None)
    T, T0 = 160, 100
    tokens = torch.randint(0, 97, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(tokens)  # [B, T, V]
        logits, state = model(tokens[:, :T0], model.zero_state(2, keep_kv_memo), last_only=True)
        assert T0 > model.gold_window and logits.shape == (2, 1, 97)
        got = [logits[:, 0]]
        for t in range(T0, T - 1):
            out, state = model(tokens[:, t:t + 1], state)
            got.append(out[:, 0])
    got = torch.stack(got, dim=1)  # logits predicting positions T0 .. T-1
    scale = full.abs().max()
    assert torch.allclose(got, full[:, T0 - 1:T - 1], atol=2e-5 * scale, rtol=0)
    assert state.length == T - 1 and (state.kv_memo is not None) == keep_kv_memo


def test_chunked_calls_and_compact_cache_equal_full_forward():
    model = tiny_goldfinch(n_layer=5, n_gold_layer=2)
    tokens = torch.randint(0, 97, (1, 120), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, full_state = model(tokens)
        pieces, state, start = [], None, 0
        for size in (1, 37, 5, 1, 40, 36):
            out, state = model(tokens[:, start:start + size], state)
            pieces.append(out)
            start += size
            if size == 5:
                state = state.compact()  # ids + compressed keys only; rebuilt on the next call
        assert start == 120
    scale = full.abs().max()
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=2e-5 * scale, rtol=0)
    assert torch.equal(state.token_ids(), tokens)
    for a, b in zip(state.att_x + state.ffn_x + state.wkv, full_state.att_x + full_state.ffn_x + full_state.wkv):
        assert torch.allclose(a, b, atol=1e-4)


def test_prefill_window_and_pieces():
    """A long prefill computes GOLD for the last 2·n_gold+1 positions only, yet its next-token
    logits and GOLD shift states equal the full pass; prefill in pieces equals one piece."""
    model = tiny_goldfinch()
    prompt = torch.randint(0, 97, (1, 90), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, full_state = model(prompt)
    a, sa = prefill(model, prompt[0].tolist())
    b, sb = prefill(model, prompt[0].tolist(), chunk_len=31)
    assert torch.allclose(a, full[0, -1], atol=1e-4) and torch.allclose(b, a, atol=1e-4)
    for i in range(model.config.first_gold_layer, model.config.n_layer):
        assert torch.allclose(sa.att_x[i], full_state.att_x[i], atol=1e-5)
        assert torch.allclose(sb.ffn_x[i], full_state.ffn_x[i], atol=1e-5)
    assert sb.key_cache.shape == (1, 90, 4) == full_state.key_cache.shape
    assert torch.allclose(sa.key_cache, full_state.key_cache, atol=1e-5)
    assert torch.allclose(sb.key_cache, full_state.key_cache, atol=1e-5)


def test_inputs_embeds_positions_are_cached_as_embeddings():
    """A front end's embeddings go into the cache as embeddings; decoding after them works."""
    model = tiny_goldfinch()
    tokens = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full, _ = model(tokens)
        a, state = model(inputs_embeds=model.emb(tokens[:, :20]))
        b, state = model(tokens[:, 20:], state)
    assert torch.allclose(torch.cat((a, b), dim=1), full, atol=1e-4)
    assert state.token_ids() is None and [p.dim() for p in state.context] == [3, 2]
    compact = state.compact()
    with torch.no_grad():
        c, _ = model(tokens[:, -1:], compact)
        d, _ = model(tokens[:, -1:], state)
    assert torch.allclose(c, d, atol=1e-5)


def test_state_sizes_and_copies():
    model = tiny_goldfinch()
    with torch.no_grad():
        _, state = model(torch.randint(0, 97, (3, 25)))
    D, Dc, H, N = 64, 4, 4, 16
    assert state.cache_nbytes() == 3 * 25 * (8 + 4 * Dc)  # int64 id + fp32 compressed key
    n_gold = model.config.n_gold_layer
    assert state.cache_nbytes(include_memo=True) == state.cache_nbytes() + 3 * n_gold * 2 * 25 * D * 4
    s = model.config.first_gold_layer
    assert state.fixed_nbytes() == 3 * 4 * (2 * 4 * D + s * H * N * N)
    picked = state.select([2, 0])
    assert picked.batch_size == 2 and torch.equal(picked.key_cache[1], state.key_cache[0])
    assert state.clone().length == 25 and not state.detach().key_cache.requires_grad
    with pytest.raises(ValueError, match="GoldFinchState"):
        model(torch.zeros(3, 1, dtype=torch.long), state=object())
    with pytest.raises(ValueError, match="B=2"):
        model(torch.zeros(2, 1, dtype=torch.long), state=state)


# ---- checkpoints and generation ------------------------------------------------------------------


@pytest.mark.parametrize("suffix,rope", [(".pth", None), (".safetensors", None), (".pth", 1000.0)])
def test_checkpoint_round_trip_in_the_goldfinch_code_layout(tmp_path, suffix, rope):
    model = tiny_goldfinch(rope_base=rope)
    path = save_model(model, tmp_path / f"gf{suffix}")
    sd = read_state_dict(path)
    assert detect_version(sd) == "goldfinch"
    assert tuple(sd["blocks.0.att.time_faaaa"].shape) == (4, 16)  # the GoldFinch code's key
    assert "blocks.3.att.time_faaaa" not in sd and "w_kv_cache_b.weight" in sd
    loaded = load_model(path)
    assert isinstance(loaded, GoldFinch) and loaded.config == model.config
    x = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_files_of_the_goldfinch_code_load(tmp_path):
    """Its Finch-C2 layers carry a trained but unused `time_faaaa`; it is dropped on load."""
    model = tiny_goldfinch()
    path = save_model(model, tmp_path / "gf.pth")
    sd = torch.load(path, weights_only=True)
    sd["blocks.1.att.time_faaaa"] = torch.randn(4, 16)
    torch.save(sd, path)
    assert load_model(path).config.head_size == 16


def test_greedy_generation_equals_full_recomputation():
    model = tiny_goldfinch()
    prompt = [5, 17, 90, 3, 44, 42, 7]
    fast = list(generate_tokens(model, prompt, max_tokens=10, sampling=SamplingConfig(temperature=0.0),
                                stop_tokens=()))
    seq = list(prompt)
    for _ in range(10):
        with torch.no_grad():
            logits, _ = model(torch.tensor([seq]))
        seq.append(int(logits[0, -1].argmax()))
    assert fast == seq[len(prompt):]


def test_cli_generate_with_a_goldfinch_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = GoldFinch(gf_config(n_layer=3, n_embd=32, vocab_size=65536))
    ckpt = save_model(model, tmp_path / "gf.pth")
    args = ["generate", "--checkpoint", str(ckpt), "--prompt", "Hello", "--max-tokens", "5", "--seed", "1"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert first.out.startswith("Hello") and "goldfinch" in first.err
    assert main(args) == 0
    assert capsys.readouterr().out == first.out


def test_music_runner_builds_goldfinch_from_the_recipe_version():
    from rwkv_mm.runners.lm_music import MusicRunConfig, build_model

    cfg = MusicRunConfig(backbone=RWKVConfig(version="goldfinch", n_layer=3, n_embd=64, head_size=16,
                                             vocab_size=128))
    model = build_model(cfg)
    assert isinstance(model, GoldFinch) and model.config.vocab_size == 128
    assert isinstance(model.zero_state(1), GoldFinchState)


@pytest.mark.slow
def test_goldfinch_music_recipe_trains_saves_and_generates(tmp_path):
    """`version: goldfinch` through a recipe: train, save model.pth, reload, generate tunes."""
    import json

    fast = ["backbone.n_layer=3", "backbone.n_embd=32", "backbone.head_size=16", "data.ctx_len=64",
            "data.max_train_tunes=32", "data.max_validation_tunes=4", "train.max_steps=2",
            "train.batch_size=4", "train.eval_every=2", "train.eval_batches=1", "train.save_every=2",
            "generate.n_tunes=1", "generate.max_bytes=40"]
    run_dir = tmp_path / "run"
    assert main(["train", "music/abc_goldfinch_tiny", *fast, "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["n_tunes"] == 1
    model = load_model(run_dir / "model.pth")
    assert isinstance(model, GoldFinch) and model.config.n_gold_layer == 1
