"""Logit parity with BlinkDL's `rwkv` pip runtime ("cpu fp32") on random official-layout files."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import save_model
from rwkv_test_utils import tiny_model

rwkv_model = pytest.importorskip("rwkv.model", reason="the `rwkv` runtime (dev extra) is not installed")

TOKENS = [5, 17, 250, 3, 3, 99, 0, 42, 7, 123, 64, 1, 200, 150, 11, 8, 299, 77, 2, 31]


@pytest.fixture(scope="module", params=["5", "6"], ids=["eagle-v5.2", "finch-v6"])
def pair(request, tmp_path_factory):
    """(our model, the runtime's model) holding the same random weights."""
    version = request.param
    ours = tiny_model(version=version, n_layer=3, n_embd=128, head_size=32, vocab_size=300, seed=7)
    path = tmp_path_factory.mktemp("ckpt") / f"tiny_v{version}.pth"
    save_model(ours, path)
    theirs = rwkv_model.RWKV(str(path), "cpu fp32", verbose=False)
    expected_version = 6.0 if version == "6" else 5.2
    assert theirs.version == expected_version, f"runtime detected v{theirs.version}"
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
    # The runtime's state list is [att_x, wkv (H, key, value), ffn_x] per layer: same layout.
    for i in range(ours.config.n_layer):
        assert torch.allclose(state.att_x[i][0], ref_state[3 * i], atol=1e-5)
        assert torch.allclose(state.wkv[i][0], ref_state[3 * i + 1], atol=1e-4)
        assert torch.allclose(state.ffn_x[i][0], ref_state[3 * i + 2], atol=1e-5)


def test_prefill_then_decode_matches_runtime(pair):
    """Parallel prefill of a prefix, then recurrent steps, against the runtime doing the same."""
    ours, theirs = pair
    prefix, rest = TOKENS[:13], TOKENS[13:]
    with torch.no_grad():
        logits, state = ours(torch.tensor([prefix]), last_only=True)
    ref, ref_state = theirs.forward(prefix, None)
    assert (logits[0, -1] - ref).abs().max().item() <= 1e-4
    for t in rest:
        with torch.no_grad():
            logits, state = ours(torch.tensor([[t]]), state)
        ref, ref_state = theirs.forward([t], ref_state)
        assert (logits[0, 0] - ref).abs().max().item() <= 1e-4
