"""Goose (RWKV-7) logits and states equal BlinkDL's `rwkv` runtime (RWKV_V7_ON=1, "cpu fp32") on
random official-layout x070 files: full sequence, token by token, prefill then decode; and an
fp64 step-by-step reference written from the runtime's formulas."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import Goose, load_model, read_state_dict, save_model
from test_goose_utils import load_runtime_v7, reference_forward, tiny_goose

pytest.importorskip("rwkv.model", reason="the `rwkv` runtime (dev extra) is not installed")

TOKENS = [5, 17, 250, 3, 3, 99, 0, 42, 7, 123, 64, 1, 200, 150, 11, 8, 299, 77, 2, 31]


@pytest.fixture(scope="module")
def runtime():
    return load_runtime_v7()


@pytest.fixture(scope="module", params=["without-layer0-vlora", "with-layer0-vlora"])
def pair(request, runtime, tmp_path_factory):
    """(our model loaded from the file, the runtime's model of the same file)."""
    model = tiny_goose(n_layer=3, n_embd=128, head_size=32, vocab_size=300, seed=7)
    path = tmp_path_factory.mktemp("x070") / "tiny.pth"
    save_model(model, path)
    if request.param == "with-layer0-vlora":  # RWKV-LM's trainer writes an unused one in layer 0
        sd = dict(read_state_dict(path))
        D = model.config.n_embd
        sd.update({"blocks.0.att.v0": torch.randn(1, 1, D), "blocks.0.att.v1": torch.randn(D, 32),
                   "blocks.0.att.v2": torch.randn(32, D)})
        path = path.with_name("tiny_l0v.pth")  # not over the file `sd` is memory-mapped from
        torch.save(sd, path)
    ours = load_model(path)
    assert isinstance(ours, Goose)
    theirs = runtime.RWKV(str(path)[:-len(".pth")], "cpu fp32")  # the runtime appends ".pth"
    assert (theirs.n_layer, theirs.n_head, theirs.head_size) == (3, 4, 32)
    return ours, theirs


def test_full_sequence_logits_match(pair):
    ours, theirs = pair
    with torch.no_grad():
        logits, _ = ours(torch.tensor([TOKENS]))
    ref, _ = theirs.forward(TOKENS, None, full_output=True)
    assert logits.shape == (1, len(TOKENS), 300)
    assert ref.abs().max() > 1.0  # the weights make the logits non-trivial
    assert (logits[0] - ref).abs().max().item() <= 1e-4


def test_token_by_token_logits_and_state_match(pair):
    ours, theirs = pair
    state, ref_state = None, None
    for t in TOKENS:
        with torch.no_grad():
            logits, state = ours(torch.tensor([[t]]), state)
        ref, ref_state = theirs.forward([t], ref_state)
        assert (logits[0, 0] - ref).abs().max().item() <= 1e-4
    # The runtime's state list is [att_x, wkv [H, value, key], ffn_x] per layer: our layout too.
    for i in range(ours.config.n_layer):
        assert torch.allclose(state.att_x[i][0], ref_state[3 * i], atol=1e-5)
        assert state.wkv[i][0].abs().max() > 0.1
        assert torch.allclose(state.wkv[i][0], ref_state[3 * i + 1], atol=1e-4)
        assert torch.allclose(state.ffn_x[i][0], ref_state[3 * i + 2], atol=1e-5)


def test_prefill_then_decode_matches_runtime(pair):
    """Parallel prefill of a prefix, then recurrent steps, against the runtime doing the same;
    and our prefill + decode equals our own full forward pass."""
    ours, theirs = pair
    prefix, rest = TOKENS[:13], TOKENS[13:]
    with torch.no_grad():
        logits, state = ours(torch.tensor([prefix]), last_only=True)
        full, _ = ours(torch.tensor([TOKENS]))
    ref, ref_state = theirs.forward(prefix, None)
    assert (logits[0, -1] - ref).abs().max().item() <= 1e-4
    for j, t in enumerate(rest):
        with torch.no_grad():
            logits, state = ours(torch.tensor([[t]]), state)
        ref, ref_state = theirs.forward([t], ref_state)
        assert (logits[0, 0] - ref).abs().max().item() <= 1e-4
        assert (logits[0, 0] - full[0, len(prefix) + j]).abs().max().item() <= 1e-4
    for i in range(ours.config.n_layer):
        assert torch.allclose(state.wkv[i][0], ref_state[3 * i + 1], atol=1e-4)


def test_model_equals_the_fp64_step_reference(pair):
    ours, _ = pair
    with torch.no_grad():
        logits, _ = ours(torch.tensor([TOKENS]))
    ref = reference_forward(ours.state_dict(), TOKENS, ours.config.n_head)
    assert (logits[0].double() - ref).abs().max().item() <= 1e-4
