"""Goose (RWKV-7) in the backbone: its config, checkpoints in the official x070 layout (with and
without layer 0's v-LoRA, .pth and .safetensors), the v_first residual under a per-layer order,
recurrent state and generation, gradients."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import (CheckpointError, ConfigError, Goose, RWKVConfig, RWKVState,
                              UnsupportedVersionError, build_backbone, config_from_state_dict,
                              detect_version, generate_tokens, load_model, normalize_version, prefill,
                              read_state_dict, save_model)
from test_goose_utils import reference_forward, tiny_goose

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("spelling", ["7", "x070", "Goose", " rwkv7 ", "RWKV-7", 7])
def test_version_aliases(spelling):
    assert normalize_version(spelling) == "7"
    assert RWKVConfig(version=spelling).family == "Goose"


@pytest.mark.parametrize("D,ranks", [(768, (64, 64, 32, 128)), (1024, (64, 64, 32, 128)),
                                     (2048, (96, 96, 64, 256)), (2560, (96, 96, 64, 320)),
                                     (4096, (128, 128, 96, 480))])
def test_default_lora_widths_and_ffn(D, ranks):
    cfg = RWKVConfig(version="7", n_embd=D)
    assert (cfg.w_lora_rank, cfg.a_lora_rank, cfg.v_lora_rank, cfg.g_lora_rank) == ranks
    assert cfg.dim_ffn == 4 * D and cfg.gate is True and cfg.group_norm_eps == pytest.approx(64e-5)


def test_config_checks_and_dict_round_trip():
    with pytest.raises(ConfigError, match="gate=False"):
        RWKVConfig(version="7", gate=False)
    with pytest.raises(ConfigError, match="g_lora_rank=8: expected null: a Goose option"):
        RWKVConfig(version="6", g_lora_rank=8)
    with pytest.raises(ConfigError, match="w_lora_rank"):
        RWKVConfig(version="7", w_lora_rank=0)
    # Finch's LoRA ranks are unused by Goose: a Finch recipe's values give way (as Eagle ignores them)
    cfg = RWKVConfig(version="7", n_embd=128, head_size=32, tm_lora_rank=16, decay_lora_rank=16, v_lora_rank=8)
    assert (cfg.tm_lora_rank, cfg.decay_lora_rank, cfg.v_lora_rank) == (None, None, 8)
    d = cfg.to_dict()
    assert "tm_lora_rank" not in d and "n_gold_layer" not in d and d["v_lora_rank"] == 8
    assert RWKVConfig.from_dict(d) == cfg
    assert "w_lora_rank" not in RWKVConfig(version="6").to_dict()
    assert cfg.state_numel() == 12 * (2 * 128 + 4 * 32 * 32)


# ----------------------------------------------------------------------------- checkpoints
def _odd_widths() -> torch.nn.Module:
    return tiny_goose(n_layer=2, n_embd=64, head_size=16, vocab_size=50, seed=3,
                      w_lora_rank=16, a_lora_rank=8, v_lora_rank=24, g_lora_rank=40, dim_ffn=96)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    model = _odd_widths()
    path = save_model(model, tmp_path / f"m{suffix}")
    loaded = load_model(path)
    assert isinstance(loaded, Goose) and loaded.config == model.config
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0], rtol=0, atol=0)


def test_official_layout_keys_and_inferred_config(tmp_path):
    model = _odd_widths()
    save_model(model, tmp_path / "m.pth")
    sd = read_state_dict(tmp_path / "m.pth")
    assert "blocks.0.att.v1" not in sd and tuple(sd["blocks.1.att.v1"].shape) == (64, 24)
    assert tuple(sd["blocks.0.att.r_k"].shape) == (4, 16) and tuple(sd["blocks.1.ffn.key.weight"].shape) == (96, 64)
    assert "blocks.0.ffn.receptance.weight" not in sd
    assert detect_version(sd) == "7"
    assert config_from_state_dict(sd) == model.config
    # a file with layer 0's (unused) v-LoRA, as RWKV-LM's trainer writes: same model, same logits
    with_l0 = dict(sd, **{"blocks.0.att.v0": torch.zeros(1, 1, 64), "blocks.0.att.v1": torch.zeros(64, 24),
                          "blocks.0.att.v2": torch.zeros(24, 64)})
    torch.save(with_l0, tmp_path / "l0.pth")
    loaded = load_model(tmp_path / "l0.pth")
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], model(ids)[0], rtol=0, atol=0)


def test_one_layer_file_without_any_v_lora(tmp_path):
    model = tiny_goose(n_layer=1, n_embd=64, head_size=16, vocab_size=50)
    loaded = load_model(save_model(model, tmp_path / "one.pth"))
    assert loaded.config.n_layer == 1 and not hasattr(loaded.blocks[0].att, "v1")


def test_deep_embed_and_broken_files_are_named(tmp_path):
    sd = dict(_odd_widths().state_dict())
    deep = dict(sd, **{"blocks.1.ffn.s_emb.weight": torch.zeros(50, 1024)})
    torch.save(deep, tmp_path / "de.pth")
    with pytest.raises(UnsupportedVersionError, match=r"DeepEmbed.*'blocks\.1\.ffn\.s_emb\.weight'.*unsupported") as err:
        load_model(tmp_path / "de.pth")
    assert "de.pth" in str(err.value)
    no_v = {k: v for k, v in sd.items() if not k.startswith("blocks.1.att.v")}
    torch.save(no_v, tmp_path / "nov.pth")
    with pytest.raises(CheckpointError, match="blocks.1.att.v1"):
        load_model(tmp_path / "nov.pth")
    bad_head = dict(sd, **{"blocks.0.att.r_k": torch.zeros(3, 16)})
    torch.save(bad_head, tmp_path / "rk.pth")
    with pytest.raises(CheckpointError, match="rk.pth"):
        load_model(tmp_path / "rk.pth")


# ----------------------------------------------------------------------------- layer order
def test_layer_order_moves_v_first_with_each_layers_permutation():
    """Odd layers on a rotation of the positions (not its own inverse): every position keeps its
    own layer-0 value, as the fp64 step reference running each layer in that order computes."""
    model = tiny_goose(n_layer=4, n_embd=64, head_size=16, vocab_size=300, seed=5)
    T = len(TOKENS)
    rotate = [(t + 3) % T for t in range(T)]
    index = torch.tensor([rotate])
    with torch.no_grad():
        logits, _ = model(torch.tensor([TOKENS]), layer_order=lambda i: index if i % 2 else None)
        plain, _ = model(torch.tensor([TOKENS]))
        assert torch.equal(model(torch.tensor([TOKENS]), layer_order=lambda i: None)[0], plain)
    ref = reference_forward(model.state_dict(), TOKENS, model.config.n_head,
                            order=[rotate if i % 2 else None for i in range(4)])
    assert (logits[0].double() - ref).abs().max() <= 1e-4
    assert (plain[0] - logits[0]).abs().max() > 1e-3


def test_one_permutation_for_every_layer_equals_a_permuted_input():
    """Layer 0 on a permutation too: v_first comes back in the natural order."""
    model = tiny_goose(n_layer=3, seed=6)
    ids = torch.tensor([TOKENS, TOKENS[::-1]])
    perm = torch.stack([torch.randperm(len(TOKENS), generator=torch.Generator().manual_seed(s)) for s in (1, 2)])
    with torch.no_grad():
        logits, _ = model(ids, layer_order=lambda i: perm)
        direct, _ = model(ids.gather(1, perm))  # the model on the permuted sequence
    back = direct.gather(1, torch.argsort(perm, 1).unsqueeze(-1).expand_as(direct))
    torch.testing.assert_close(logits, back, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- state, generation
def test_chunked_prefill_batches_and_generation():
    model = tiny_goose(seed=8)
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        full, _ = model(ids)
        last, state = prefill(model, TOKENS, chunk_len=4)  # four calls, each with its own v_first
        torch.testing.assert_close(last, full[0, -1], rtol=1e-5, atol=1e-5)
        assert isinstance(state, RWKVState) and state.wkv[0].dtype == torch.float32
        # two sequences batched: each row as alone
        _, s1 = model(torch.tensor([TOKENS[:5]]))
        _, s2 = model(torch.tensor([TOKENS[5:10]]))
        both, _ = model(torch.tensor([[7], [8]]), RWKVState.cat([s1, s2]))
        torch.testing.assert_close(both[1], model(torch.tensor([[8]]), s2)[0][0], rtol=1e-5, atol=1e-5)
    out = list(generate_tokens(model, TOKENS[:4], max_tokens=5, seed=0, stop_tokens=()))
    assert len(out) == 5 and all(0 <= t < 300 for t in out)


def test_every_parameter_gets_a_gradient():
    model = tiny_goose(n_layer=2, seed=9).train()
    logits, state = model(torch.tensor([TOKENS]))
    (logits.square().mean() + state.wkv[1].square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_build_backbone_and_wrong_state():
    model = build_backbone(RWKVConfig(version="goose", n_layer=2, n_embd=64, head_size=16, vocab_size=20))
    assert isinstance(model, Goose) and model.supports_layer_order
    assert not hasattr(model.blocks[0].att, "v0") and hasattr(model.blocks[1].att, "v0")
    assert model.blocks[1].att.ln_x.weight[0].item() == pytest.approx(1.0)  # ((l+1)/L)^0.7, l = 1
    assert model.blocks[0].att.ln_x.weight[0].item() == pytest.approx(0.5 ** 0.7)
    with pytest.raises(ValueError, match="RWKVState"):
        model(torch.tensor([[1]]), state=(torch.zeros(1),))


def test_gradient_checkpointing_gives_the_same_gradients_and_state():
    """train.grad_cp: each block recomputed in backward (v_first included) changes nothing."""
    ids = torch.tensor([TOKENS[:9], TOKENS[5:14]])
    order = torch.stack([torch.arange(9).roll(2), torch.arange(9).flip(0)])
    results = []
    for cp in (False, True):
        model = tiny_goose(n_layer=3, seed=10).train()
        model.set_grad_checkpointing(cp)
        start = model.zero_state(2)
        start.wkv[1].normal_()
        start.wkv[1].requires_grad_()
        logits, state = model(ids, start, layer_order=lambda i: order if i != 1 else None)
        (logits.square().mean() + state.wkv[2].square().mean()).backward()
        results.append(({n: p.grad for n, p in model.named_parameters()}, start.wkv[1].grad, state))
    (g0, s0, st0), (g1, s1, st1) = results
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(st1.wkv[2], st0.wkv[2], rtol=0, atol=0)
