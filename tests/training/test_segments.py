"""Segment training (`train.segment_len`): the loss and every gradient of a batch trained in
segments through the recurrent state equal the whole-sequence pass (the reference: one forward
and one backward over all positions), for Eagle, Finch and Goose, with and without grad_cp,
with ignored targets, padding, an S that does or does not divide T, the chunked and the plain
LM-head loss with L2Wrap; VisualRWKV's loss with the image span anywhere (reversed or not)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rwkv_mm.backbone import set_grad_checkpointing
from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.training.l2wrap import l2wrap
from rwkv_mm.training.lm_head_loss import head_loss_options, lm_loss
from rwkv_mm.training.segments import SegmentedBackward, even_bounds
from rwkv_test_utils import tiny_model

V = 97


def lm_model(version: str, n_layer: int = 3, n_embd: int = 64, vocab_size: int = V, seed: int = 0) -> nn.Module:
    """A small randomly weighted model in training mode (Goose: the Goose tests' randomizer)."""
    if version != "7":
        return tiny_model(version, n_layer=n_layer, n_embd=n_embd, head_size=16, vocab_size=vocab_size,
                          seed=seed).train()
    if "test_goose_utils" not in sys.modules:  # tests/backbone/test_goose_utils.py, by path
        path = Path(__file__).resolve().parents[1] / "backbone" / "test_goose_utils.py"
        spec = importlib.util.spec_from_file_location("test_goose_utils", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["test_goose_utils"] = module
    return sys.modules["test_goose_utils"].tiny_goose(n_layer=n_layer, n_embd=n_embd, head_size=16,
                                                      vocab_size=vocab_size, seed=seed).train()


def lm_batch(B: int, T: int, seed: int, S: int) -> dict:
    """Random tokens and targets, ~30% ignored, row 1 padded at its end, and one whole segment
    of targets ignored (its positions still carry the state)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[torch.rand(B, T, generator=g) < 0.3] = IGNORE_INDEX
    targets[:, S:2 * S] = IGNORE_INDEX
    ids[1, T - 5:] = 0
    targets[1, T - 6:] = IGNORE_INDEX
    return {"input_ids": ids, "targets": targets}


def weigher(n_tokens: torch.Tensor, positions: int):
    """The trainer's weighting: loss / target tokens, L2Wrap on returned logits."""

    def weigh(loss_sum, logits):
        scaled = loss_sum.float() / n_tokens.float()
        if positions and logits is not None:
            scaled = l2wrap(scaled, logits, positions)
        return scaled

    return weigh


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def whole_pass(model: nn.Module, loss_fn, batch: dict, chunk: int, positions: int):
    """The reference: one forward and backward over the whole batch."""
    model.zero_grad(set_to_none=True)
    n_tokens = (batch["targets"] != IGNORE_INDEX).sum()
    with head_loss_options(chunk, positions):
        loss_sum, _, logits = loss_fn(model, batch)
    weigher(n_tokens, positions)(loss_sum, logits).backward()
    return loss_sum.detach().double(), grads(model)


def segmented_pass(model: nn.Module, loss_fn, batch: dict, chunk: int, positions: int, S: int):
    model.zero_grad(set_to_none=True)
    n_tokens = (batch["targets"] != IGNORE_INDEX).sum()
    runner = SegmentedBackward(S, model, model, False, loss_fn.segmented, contextlib.nullcontext)
    with head_loss_options(chunk, positions):
        loss = runner.backward(batch, weigher(n_tokens, positions), last=True)
    return loss, grads(model)


def assert_same(whole, segmented, rtol: float = 2e-5) -> None:
    """Equal loss and gradients; fp32: segments only change the order of the sums (the WKV
    chunks and the head chunks fall elsewhere), so each gradient tensor agrees to a small
    fraction of its own scale."""
    (loss_w, grads_w), (loss_s, grads_s) = whole, segmented
    torch.testing.assert_close(loss_s, loss_w, rtol=1e-5, atol=0)
    assert grads_w.keys() == grads_s.keys() and grads_w
    for name, g in grads_w.items():
        scale = float(g.abs().max())
        torch.testing.assert_close(grads_s[name], g, rtol=rtol, atol=rtol * scale + 1e-12, msg=name)


CASES = [  # (S, T, head chunk, L2Wrap): S divides T / does not; chunked / plain head
    (8, 32, 7, True),
    (8, 35, 0, True),
    (5, 20, 3, False),
]


@pytest.mark.parametrize("grad_cp", [False, True], ids=["plain", "grad_cp"])
@pytest.mark.parametrize("version", ["5", "6", "7"])
@pytest.mark.parametrize("S,T,chunk,with_l2wrap", CASES)
def test_lm_loss_and_every_gradient_equal_the_whole_pass(version, grad_cp, S, T, chunk, with_l2wrap):
    model = lm_model(version)
    set_grad_checkpointing(model, grad_cp)
    batch = lm_batch(2, T, seed=T, S=S)
    positions = batch["targets"].numel() if with_l2wrap else 0
    whole = whole_pass(model, lm_loss, batch, chunk, positions)
    assert len(even_bounds(model, batch, S)) - 1 == -(-T // S)
    assert_same(whole, segmented_pass(model, lm_loss, batch, chunk, positions, S))


def test_gradient_reaches_every_segment_through_the_state():
    """Only the last segment has targets: the first segments' positions still get a gradient
    (through the state), exactly as in the whole pass — not truncated BPTT."""
    model = tiny_model("6", n_layer=2, n_embd=64, head_size=16, vocab_size=V).train()
    batch = lm_batch(2, 24, seed=3, S=8)
    batch["targets"][:, :16] = IGNORE_INDEX
    emb_rows = batch["input_ids"][:, :16].unique()
    whole = whole_pass(model, lm_loss, batch, 4, 0)
    segmented = segmented_pass(model, lm_loss, batch, 4, 0, 8)
    assert_same(whole, segmented)
    assert segmented[1]["emb.weight"][emb_rows].abs().sum() > 0  # tokens of the first segments learn


def test_one_segment_equals_the_whole_pass():
    model = tiny_model("5", n_layer=2, n_embd=64, head_size=16, vocab_size=V).train()
    batch = lm_batch(2, 12, seed=4, S=4)
    assert_same(whole_pass(model, lm_loss, batch, 5, 24), segmented_pass(model, lm_loss, batch, 5, 24, 64))


def test_bf16_autocast_segments_track_the_whole_pass():
    """Under bf16 autocast (the GPU's setting; here on the CPU) segments round at other places:
    the loss and gradients agree to bf16 precision. Goose: on the CPU, Eagle/Finch's chunked
    WKV form fails under bf16 autocast even for whole sequences (mixed dtypes in baddbmm_)."""
    model = lm_model("7", n_layer=2)
    batch = lm_batch(2, 32, seed=5, S=8)
    n_tokens = (batch["targets"] != IGNORE_INDEX).sum()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), head_loss_options(8, 64):
        loss_sum, _, _ = lm_loss(model, batch)
    (loss_sum / n_tokens).backward()
    whole = loss_sum.detach().double(), grads(model)
    model.zero_grad(set_to_none=True)
    runner = SegmentedBackward(8, model, model, False, lm_loss.segmented,
                               lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    with head_loss_options(8, 64):
        loss = runner.backward(batch, weigher(n_tokens, 64), last=True)
    torch.testing.assert_close(loss, whole[0], rtol=2e-2, atol=0)
    for name, g in whole[1].items():
        cos = torch.nn.functional.cosine_similarity(grads(model)[name].flatten(), g.flatten(), dim=0)
        assert cos > 0.97, name
