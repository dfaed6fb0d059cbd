"""A learned initial state in the backbone: the file layout (`blocks.{i}.att.time_state`
[H, value, key]), load_model/save_model, a standalone state.pth applied to any same-shape model,
the errors for a state that does not fit, and generation starting from it."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import (CheckpointError, RWKVConfig, RWKVState, SamplingConfig, UserError, apply_tuned_state,
                              build_backbone, generate_tokens, has_initial_state, initial_state, load_model,
                              load_tuned_state, prefill, read_state_dict, save_model, save_tuned_state,
                              tuned_state_dict)
from rwkv_test_utils import tiny_model
from state_tuning.state_utils import TOKENS, random_state_, tuned_tiny

VERSIONS = pytest.mark.parametrize("version", ["5", "6"], ids=["eagle", "finch"])


def _logits(model, state=None, tokens=TOKENS):
    with torch.no_grad():
        return model(torch.tensor([tokens]), state)[0]


def _reference_forward(model, tokens, wkv0):
    """Our model run token by token from an explicit state built by hand from the file layout:
    wkv = time_state transposed (key first), shifts zero — the runtime's reading of the file."""
    L = model.config.n_layer
    state = model.zero_state(1)
    state.wkv = [wkv0[f"blocks.{i}.att.time_state"].transpose(-1, -2).unsqueeze(0).float() for i in range(L)]
    out = []
    with torch.no_grad():
        for t in tokens:
            logits, state = model(torch.tensor([[t]]), state)
            out.append(logits[0, 0])
    return torch.stack(out)


@VERSIONS
def test_saved_file_holds_time_state_value_first_and_loads_back(version, tmp_path):
    model = tuned_tiny(version)
    path = save_model(model, tmp_path / "model.pth")
    sd = read_state_dict(path)
    H, N = model.config.n_head, model.config.head_size
    explicit = initial_state(model)
    for i in range(model.config.n_layer):
        ts = sd[f"blocks.{i}.att.time_state"]
        assert ts.shape == (H, N, N)
        assert torch.equal(ts.transpose(-1, -2), explicit.wkv[i][0])  # file: S[h, value, key]
    loaded = load_model(path)
    assert has_initial_state(loaded)
    # the file read the runtime's way (by hand, token by token) = our loaded model from None
    assert torch.allclose(_logits(loaded)[0], _reference_forward(tiny_model(version, n_layer=3, seed=7), TOKENS, sd),
                          atol=1e-5)


@VERSIONS
@pytest.mark.parametrize("shift", [False, True], ids=["wkv", "wkv+shift"])
def test_loaded_state_equals_passing_it_explicitly(version, shift, tmp_path):
    model = tuned_tiny(version, shift=shift)
    loaded = load_model(save_model(model, tmp_path / "model.pth"))
    plain = tiny_model(version, n_layer=3, seed=7)  # the same weights, no learned state
    explicit = _logits(plain, initial_state(loaded))
    assert torch.equal(_logits(loaded), explicit)
    assert torch.equal(_logits(model), explicit)
    assert not torch.allclose(_logits(plain), explicit, atol=1e-3)  # the state matters
    # batch of 3 from None: each row starts from the same learned state
    with torch.no_grad():
        batch, _ = loaded(torch.tensor([TOKENS] * 3))
    assert torch.allclose(batch, explicit.expand(3, -1, -1), atol=1e-5)


@VERSIONS
def test_prefill_chunks_decode_and_generation_start_from_the_learned_state(version):
    model = tuned_tiny(version)
    plain = tiny_model(version, n_layer=3, seed=7)
    logits, state = prefill(model, TOKENS, chunk_len=7)
    ref, ref_state = prefill(plain, TOKENS, initial_state(model), chunk_len=20)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(state.wkv, ref_state.wkv))
    greedy = dict(sampling=SamplingConfig(temperature=0.0), stop_tokens=())
    ours = list(generate_tokens(model, TOKENS[:5], max_tokens=8, **greedy))
    theirs = list(generate_tokens(plain, TOKENS[:5], max_tokens=8, state=initial_state(model), **greedy))
    assert ours == theirs


def test_grad_checkpointing_and_gradients_reach_the_state():
    model = tuned_tiny("6", shift=True).train()
    tokens = torch.tensor([TOKENS[:12]] * 2)
    grads = []
    for cp in (False, True):
        model.set_grad_checkpointing(cp)
        model.zero_grad()
        logits, _ = model(tokens)
        logits.float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if n.endswith("_state")})
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0, name
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


@VERSIONS
@pytest.mark.parametrize("shift", [False, True], ids=["wkv", "wkv+shift"])
def test_state_file_round_trip_into_another_model(version, shift, tmp_path):
    model = tuned_tiny(version, shift=shift)
    path = save_tuned_state(model, tmp_path / "state.pth")
    sd = read_state_dict(path)
    assert all(k.endswith(("att.time_state", "att.shift_state", "ffn.shift_state")) for k in sd)
    assert len(sd) == 3 * (3 if shift else 1)
    base = tmp_path / "base.pth"
    save_model(tiny_model(version, n_layer=3, seed=7), base)
    other = load_tuned_state(load_model(base), path)
    assert torch.equal(_logits(other), _logits(model))
    assert tuned_state_dict(other).keys() == sd.keys()
    # a state without shift vectors replaces one with them: the shifts start from zeros again
    if shift:
        apply_tuned_state(other, {k: v for k, v in sd.items() if k.endswith("time_state")})
        assert all(p.abs().sum() == 0 for k, p in tuned_state_dict(other).items() if "shift" in k)


def test_a_state_that_does_not_fit_names_the_file_and_the_layer(tmp_path):
    path = save_tuned_state(tuned_tiny("6", n_layer=2), tmp_path / "state.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.2\.att\.time_state.*state\.pth"):
        load_tuned_state(tiny_model("6", n_layer=3), path)  # 3 layers: layer 2 missing
    with pytest.raises(CheckpointError, match=r"blocks\.1\.att\.time_state.*does not have"):
        load_tuned_state(tiny_model("6", n_layer=1), path)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.att\.time_state' has shape \[4, 32, 32\].*\[2, 64, 64\]"):
        load_tuned_state(tiny_model("6", n_layer=2, head_size=64), path)
    weights = save_model(tiny_model("6", n_layer=2), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"no 'blocks\.<i>\.att\.time_state' keys.*plain\.pth"):
        load_tuned_state(tiny_model("6", n_layer=2), weights)
    with pytest.raises(UserError, match="holds no learned initial state"):
        save_tuned_state(tiny_model("6"), tmp_path / "none.pth")
    bad = {k: v.clone() for k, v in read_state_dict(path).items()}
    bad["blocks.1.att.time_state"][0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.att\.time_state.*NaN"):
        apply_tuned_state(tiny_model("6", n_layer=2), bad, "bad.pth")


@pytest.mark.parametrize("version, family", [("7", "Goose"), ("goldfinch", "GoldFinch")])
def test_goose_and_goldfinch_are_refused_clearly(version, family, tmp_path):
    """BlinkDL's runtime reads no time_state from x070 files; GoldFinch's GOLD layers have no WKV
    state: both refuse a learned state, whether applied or found in a file."""
    kw = dict(n_layer=2, n_embd=32, head_size=16, vocab_size=40)
    state = save_tuned_state(tuned_tiny("6", **kw), tmp_path / "state.pth")
    model = build_backbone(RWKVConfig(version=version, **kw))
    with pytest.raises(UserError, match=f"Eagle and Finch only, not {family}"):
        load_tuned_state(model, state)
    sd = {**model.state_dict(), **read_state_dict(state)} if version == "7" else None
    if sd is not None:
        torch.save(sd, tmp_path / "x070.pth")
        with pytest.raises(UserError, match=r"Eagle and Finch only, not Goose.*x070\.pth"):
            load_model(tmp_path / "x070.pth")


def test_load_state_dict_of_a_fresh_model_takes_the_learned_state():
    """An exported or gathered state dict with time_state keys loads into a freshly built model
    (what the FSDP export does), which then starts from that state."""
    model = tuned_tiny("6", shift=True)
    fresh = tiny_model("6", n_layer=3, seed=1)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(_logits(fresh), _logits(model))
    assert isinstance(initial_state(fresh, 2), RWKVState) and initial_state(fresh, 2).batch_size == 2


def test_random_state_helper_is_not_zero():
    model = random_state_(tiny_model("5", n_layer=1))
    assert all(v.abs().sum() > 0 for v in tuned_state_dict(model).values())
