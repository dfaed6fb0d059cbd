"""A state-tuned model.pth in BlinkDL's `rwkv` runtime ("cpu fp32"): it reads
`blocks.{i}.att.time_state` (transposing the last two axes into its state) and starts every
sequence from it; its logits must equal ours (our model started from None) within 1e-4."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import initial_state, load_model, save_model
from state_tuning.state_utils import TOKENS, tuned_tiny

rwkv_model = pytest.importorskip("rwkv.model", reason="the `rwkv` runtime (dev extra) is not installed")


@pytest.fixture(scope="module", params=["5", "6"], ids=["eagle-v5.2", "finch-v6"])
def pair(request, tmp_path_factory):
    """(our model loaded from the state-tuned file, the runtime's model of the same file)."""
    version = request.param
    path = save_model(tuned_tiny(version), tmp_path_factory.mktemp("tuned") / f"tuned_v{version}.pth")
    theirs = rwkv_model.RWKV(str(path), "cpu fp32", verbose=False)
    assert theirs.args.time_state  # the runtime saw the keys
    return load_model(path), theirs


def test_full_sequence_logits_from_the_learned_state_match(pair):
    ours, theirs = pair
    with torch.no_grad():
        logits, _ = ours(torch.tensor([TOKENS]))
    ref, _ = theirs.forward(TOKENS, None, full_output=True)
    assert (logits[0] - ref).abs().max().item() <= 1e-4
    with torch.no_grad():  # the state matters: from zeros the logits are far off
        zero, _ = ours(torch.tensor([TOKENS]), ours.zero_state(1))
    assert (zero[0] - ref).abs().max().item() > 1e-2


def test_runtime_state_is_our_initial_state_and_decoding_matches(pair):
    ours, theirs = pair
    state, ref_state = None, None
    start = initial_state(ours)
    ref, ref_state = theirs.forward([TOKENS[0]], None)
    # the runtime's fresh state, read back before the first token's update: [H, key, value]
    for i in range(ours.config.n_layer):
        ts = theirs.w[f"blocks.{i}.att.time_state"].float()
        assert torch.allclose(ts.transpose(-1, -2), start.wkv[i][0], atol=0)
    with torch.no_grad():
        logits, state = ours(torch.tensor([[TOKENS[0]]]), state)
    assert (logits[0, 0] - ref).abs().max().item() <= 1e-4
    for t in TOKENS[1:]:
        with torch.no_grad():
            logits, state = ours(torch.tensor([[t]]), state)
        ref, ref_state = theirs.forward([t], ref_state)
        assert (logits[0, 0] - ref).abs().max().item() <= 1e-4
    for i in range(ours.config.n_layer):
        assert torch.allclose(state.wkv[i][0], ref_state[3 * i + 1], atol=1e-4)
