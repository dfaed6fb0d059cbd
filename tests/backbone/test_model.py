"""Model API: state continuation, embeddings input, batching, initialisation, optimizer groups."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import RWKV, RWKVConfig, RWKVState, param_groups
from rwkv_test_utils import tiny_model

torch.manual_seed(0)
TOKENS = torch.randint(0, 300, (2, 150))


@pytest.fixture(scope="module", params=["5", "6"])
def model(request):
    return tiny_model(version=request.param, n_layer=2, n_embd=128, head_size=32)


def run(model, tokens, state=None, **kw):
    with torch.no_grad():
        return model(tokens, state, **kw)


def test_returned_state_continues_the_sequence_exactly(model):
    whole, whole_state = run(model, TOKENS)
    a, state = run(model, TOKENS[:, :61])
    b, state = run(model, TOKENS[:, 61:140], state)
    steps = []
    for t in range(140, 150):  # then token by token (the recurrent decode step)
        out, state = run(model, TOKENS[:, t:t + 1], state)
        steps.append(out)
    pieces = torch.cat([a, b, *steps], dim=1)
    assert torch.allclose(pieces, whole, atol=1e-5, rtol=1e-5)
    for mine, ref in zip(state.wkv, whole_state.wkv):
        assert torch.allclose(mine, ref, atol=1e-5, rtol=1e-5)


def test_inputs_embeds_equals_tokens(model):
    by_tokens, _ = run(model, TOKENS[:, :20])
    by_embeds, _ = run(model, None, inputs_embeds=model.emb(TOKENS[:, :20]))
    assert torch.equal(by_tokens, by_embeds)


def test_last_only_and_hidden(model):
    full, s1 = run(model, TOKENS[:, :30])
    last, s2 = run(model, TOKENS[:, :30], last_only=True)
    assert last.shape == (2, 1, 300)
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-6)
    hidden, _ = run(model, TOKENS[:, :30], return_hidden=True)
    assert hidden.shape == (2, 30, model.config.n_embd)
    assert torch.allclose(model.head(hidden), full, atol=1e-5)


def test_batch_rows_are_independent(model):
    both, _ = run(model, TOKENS[:, :40])
    one, _ = run(model, TOKENS[1:, :40])
    assert torch.allclose(both[1:], one, atol=1e-5)


def test_state_helpers(model):
    _, state = run(model, TOKENS[:, :10])
    picked = state.select([1])
    assert picked.batch_size == 1 and torch.equal(picked.wkv[0][0], state.wkv[0][1])
    joined = RWKVState.cat([picked, picked])
    assert joined.batch_size == 2
    out_a, _ = run(model, TOKENS[1:, 10:20], picked)
    out_b, _ = run(model, TOKENS[[1, 1], 10:20], joined)
    assert torch.allclose(out_a[0], out_b[1], atol=1e-5)


def test_bad_inputs_are_rejected(model):
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 300\)"):
        model(torch.tensor([[1, 300]]))
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 3, 7))
    _, state = run(model, TOKENS[:, :3])
    with pytest.raises(ValueError, match="state holds 2"):
        model(TOKENS[:1, :3], state)


def test_gradients_reach_every_parameter_and_initial_state(model):
    model.zero_grad()
    state = model.zero_state(2)
    state.wkv[0].normal_()
    state.wkv[0].requires_grad_(True)
    logits, _ = model(TOKENS[:, :70], state)
    logits.float().logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert state.wkv[0].grad is not None and state.wkv[0].grad.abs().sum() > 0
    model.zero_grad()


def test_bf16_model_runs_with_fp32_state():
    m = tiny_model(version="6", n_layer=1, n_embd=64, head_size=16).to(torch.bfloat16)
    ref = tiny_model(version="6", n_layer=1, n_embd=64, head_size=16)
    out, state = run(m, TOKENS[:, :33])
    assert out.dtype == torch.bfloat16 and state.wkv[0].dtype == torch.float32
    ref_out, _ = run(ref, TOKENS[:, :33])
    assert (out.float() - ref_out).abs().max() < 0.15 * ref_out.abs().max()


@pytest.mark.parametrize("version", ["5", "6"])
def test_initialisation_follows_appendix_i(version):
    torch.manual_seed(0)
    config = RWKVConfig(version=version, n_layer=4, n_embd=128, vocab_size=500, head_size=32)
    m = RWKV(config)
    D = 128
    for block in m.blocks:
        assert torch.count_nonzero(block.att.output.weight) == 0
        assert torch.count_nonzero(block.ffn.value.weight) == 0
        assert torch.count_nonzero(block.ffn.receptance.weight) == 0
    assert m.emb.weight.abs().max() <= 1e-4
    # head: orthogonal rows scaled by 0.5·sqrt(V/D)
    w = m.head.weight
    gram = w.t() @ w / (0.25 * 500 / D)
    assert torch.allclose(gram, torch.eye(D), atol=1e-4)
    # decay schedule at layer l: ω_n = -6 + 5·(n/(D-1))^(0.7 + 1.3·l/(L-1))
    l = 2
    n = torch.arange(D, dtype=torch.float32)
    omega = -6 + 5 * (n / (D - 1)) ** (0.7 + 1.3 * l / 3)
    assert torch.allclose(m.blocks[l].att.time_decay.flatten(), omega)
    u = (l / 3) * (1 - n / (D - 1)) + ((n + 1) % 3 - 1) * 0.1
    assert torch.allclose(m.blocks[l].att.time_faaaa.flatten(), u)
    ddd = n / D
    mix = ddd ** (1 - l / 4)
    att = m.blocks[l].att
    if version == "6":
        assert torch.allclose(att.time_maa_k.flatten(), 1 - mix)
        assert torch.count_nonzero(att.time_maa_w1) == 0 and att.time_maa_w2.abs().max() <= 0.01
        assert torch.count_nonzero(att.time_decay_w1) == 0
    else:
        assert torch.allclose(att.time_mix_k.flatten(), mix)
        assert torch.allclose(att.time_mix_v.flatten(), mix + 0.3 * l / 3)


def test_param_groups_follow_appendix_h():
    m = tiny_model(version="6", n_layer=2, n_embd=64, head_size=16)
    m.emb.weight.requires_grad_(False)
    groups = {g["name"]: g for g in param_groups(m, lr=1e-3, weight_decay=1e-3)}
    names = {id(p): n for n, p in m.named_parameters()}
    by_group = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    assert "blocks.0.att.time_decay" in by_group["decay_2x"]
    assert "blocks.0.att.time_decay_w1" in by_group["decay_2x"]
    assert groups["decay_2x"]["lr"] == pytest.approx(2e-3) and groups["decay_2x"]["weight_decay"] == 0
    assert "head.weight" in by_group["weights_wd"] and "blocks.1.ffn.key.weight" in by_group["weights_wd"]
    assert groups["weights_wd"]["weight_decay"] == 1e-3
    for name in ("blocks.0.att.time_faaaa", "blocks.0.ln1.weight", "blocks.0.att.time_maa_w1",
                 "blocks.0.att.time_maa_k", "blocks.0.att.ln_x.bias"):
        assert name in by_group["other_1x"], name
    all_names = set().union(*by_group.values())
    assert "emb.weight" not in all_names  # frozen → not optimised
    assert all_names == {n for n, p in m.named_parameters() if p.requires_grad}
