"""The chunked LM-head loss (`train.loss_chunk`): the same loss and gradients as full logits +
F.cross_entropy + RWKV-LM's L2Wrap formula, written out here independently, for the head, the
hidden states and everything upstream; never a [positions, V] tensor kept for backward."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.training.lm_head_loss import head_loss, head_loss_options, lm_loss
from rwkv_test_utils import tiny_model


def reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float,
              l2wrap_positions: int, l2wrap_rows: torch.Tensor | None) -> torch.Tensor:
    """scale · Σ CE(full logits) plus L2Wrap's extra gradient 1e-4 · max / n_positions at each
    `l2wrap_rows` position's largest logit (as a surrogate term whose gradient is exactly that)."""
    logits = hidden @ weight.t()  # [B, T, V]
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")
    total = loss * scale
    if l2wrap_positions:
        top, idx = logits.detach().max(-1, keepdim=True)
        extra = torch.zeros_like(logits).scatter_(-1, idx, top * 1e-4 / l2wrap_positions)
        total = total + (logits * extra * l2wrap_rows.unsqueeze(-1)).sum()
    return loss, total


def assert_grad_close(got: torch.Tensor, want: torch.Tensor, name: str, rel: float = 1e-5) -> None:
    """Equal up to fp32 rounding of sums in another order: the largest error is small next to
    the largest entry (elementwise tolerances fail on entries that are nearly zero)."""
    err, scale = (got - want).abs().max().item(), want.abs().max().item()
    assert err <= rel * scale + 1e-12, f"{name}: error {err:.3g} vs largest entry {scale:.3g}"


def assert_model_grads_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Every parameter's gradient, as one vector (as tests/training/test_trainer_strength.py
    compares them: some parameters' gradients are themselves rounding noise, ~1e-9)."""
    assert got.keys() == want.keys() and got
    names = sorted(want)
    assert_grad_close(torch.cat([got[n].flatten() for n in names]),
                      torch.cat([want[n].flatten() for n in names]), "all parameters")


def case(B: int = 3, T: int = 13, D: int = 24, V: int = 101, ignored: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, D, generator=g)
    weight = torch.randn(V, D, generator=g) / D ** 0.5 * 3  # peaked softmaxes
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[torch.rand(B, T, generator=g) < ignored] = IGNORE_INDEX
    return hidden, weight, targets


def head_of(weight: torch.Tensor) -> nn.Linear:
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


@pytest.mark.parametrize("chunk", [1, 5, 13, 64, 10_000])
@pytest.mark.parametrize("l2wrap, every", [(0, False), (5, False), (5, True)])
def test_loss_and_gradients_equal_the_full_logits_computation(chunk, l2wrap, every):
    """Chunk sizes that do and don't divide the positions, ignored positions, L2Wrap at the
    target positions or at every position."""
    hidden, weight, targets = case()
    scale = 0.37  # the trainer's world / n_tokens
    h_ref = hidden.clone().requires_grad_(True)
    w_ref = weight.clone().requires_grad_(True)
    rows = torch.ones_like(targets, dtype=torch.float32) if every else (targets != IGNORE_INDEX).float()
    want_loss, total = reference(h_ref, w_ref, targets, scale, l2wrap, rows)
    total.backward()

    h = hidden.clone().requires_grad_(True)
    head = head_of(weight)
    with head_loss_options(chunk, l2wrap):
        loss, n_tokens, logits = head_loss(head, h, targets, l2wrap_every_position=every)
    (loss * scale).backward()
    assert logits is None and int(n_tokens) == int((targets != IGNORE_INDEX).sum())
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, w_ref.grad, rtol=1e-5, atol=1e-6)
    if l2wrap:  # L2Wrap's share stands far above the rounding: the comparison sees it
        h0 = hidden.clone().requires_grad_(True)
        reference(h0, weight, targets, scale, 0, None)[1].backward()
        share = (h_ref.grad - h0.grad).abs().max()
        assert share > 0 and (h.grad - h_ref.grad).abs().max() <= 0.05 * share


def test_l2wrap_reaches_ignored_positions_only_when_asked():
    hidden, weight, targets = case(seed=1)
    grads = {}
    for every in (False, True):
        h = hidden.clone().requires_grad_(True)
        with head_loss_options(4, 10):
            loss, _, _ = head_loss(head_of(weight), h, targets, l2wrap_every_position=every)
        loss.mul(0.0).backward()  # only L2Wrap's term remains (it ignores the loss's scale)
        grads[every] = h.grad
    ignored = targets == IGNORE_INDEX
    assert grads[False][ignored].abs().max() == 0 and grads[True][ignored].abs().min() > 0
    assert_grad_close(grads[False][~ignored], grads[True][~ignored], "target positions")


def test_plain_path_returns_the_selected_positions_logits():
    hidden, weight, targets = case(seed=2)
    with head_loss_options(0, 0):
        loss, n, logits = head_loss(head_of(weight), hidden, targets)
    keep = targets != IGNORE_INDEX
    torch.testing.assert_close(logits, hidden[keep] @ weight.t())
    torch.testing.assert_close(loss, F.cross_entropy(hidden[keep] @ weight.t(), targets[keep], reduction="sum"))
    with head_loss_options(0, 7):  # L2Wrap at every position: every position's logits
        assert head_loss(head_of(weight), hidden, targets, l2wrap_every_position=True)[2].shape == (39, 101)


def test_frozen_head_or_frozen_hidden_and_no_grad():
    hidden, weight, targets = case(seed=3)
    head = head_of(weight).requires_grad_(False)
    h = hidden.clone().requires_grad_(True)
    with head_loss_options(6, 20):
        head_loss(head, h, targets)[0].backward()
    h_ref = hidden.clone().requires_grad_(True)
    reference(h_ref, weight, targets, 1.0, 20, (targets != IGNORE_INDEX).float())[1].backward()
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-5, atol=1e-6)
    assert head.weight.grad is None
    head.requires_grad_(True)
    with head_loss_options(6, 20):
        head_loss(head, hidden, targets)[0].backward()  # hidden needs no gradient
    assert head.weight.grad is not None
    with torch.no_grad(), head_loss_options(6, 20):
        loss, _, _ = head_loss(head, hidden, targets)
    torch.testing.assert_close(loss, reference(hidden, weight, targets, 1.0, 0, None)[0])


def test_without_autograd_only_the_logits_are_computed():
    """Evaluation (no_grad, inference_mode): one product per chunk, no gradient products."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountMatmuls(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.__name__.startswith(("mm", "addmm"))
            return func(*args, **(kwargs or {}))

    hidden, weight, targets = case(ignored=0.0, seed=9)  # 39 rows: 5 chunks of 8
    head = head_of(weight)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode(), head_loss_options(8, 10), CountMatmuls() as counter:
            head_loss(head, hidden, targets)
        assert counter.n == 5
    with head_loss_options(8, 10), CountMatmuls() as counter:
        head_loss(head, hidden.requires_grad_(True), targets)
    assert counter.n == 15  # logits, d/dhidden, d/dW per chunk


def test_no_target_at_all_is_a_zero_loss_with_zero_gradients():
    hidden, weight, targets = case(seed=4)
    head = head_of(weight)
    h = hidden.clone().requires_grad_(True)
    with head_loss_options(4, 0):
        loss, n, _ = head_loss(head, h, torch.full_like(targets, IGNORE_INDEX))
    loss.backward()
    assert float(loss.detach()) == 0 and int(n) == 0
    assert h.grad.abs().max() == 0 and head.weight.grad.abs().max() == 0


def test_nothing_of_size_positions_by_vocabulary_is_kept_for_backward():
    hidden, weight, targets = case(B=4, T=64, V=997, ignored=0.0)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
        with head_loss_options(16, 100):
            head_loss(head_of(weight), hidden.clone().requires_grad_(True), targets)
    assert kept and max(kept) <= max(weight.numel(), hidden.numel())


def test_bf16_autocast_follows_the_plain_head():
    """Under autocast the products run in bf16 as `head(hidden)` does; losses and gradients
    agree with the plain path to bf16 precision."""
    hidden, weight, targets = case(seed=5)
    results = []
    for chunk in (0, 7):
        head = head_of(weight)
        h = hidden.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16), head_loss_options(chunk, 0):
            loss, _, _ = head_loss(head, h, targets)
        loss.backward()
        results.append((loss.detach(), h.grad, head.weight.grad))
    (la, ha, wa), (lb, hb, wb) = results
    torch.testing.assert_close(la, lb, rtol=1e-3, atol=0)
    torch.testing.assert_close(ha, hb, rtol=0, atol=2e-2 * ha.abs().max().item())
    torch.testing.assert_close(wa, wb, rtol=0, atol=2e-2 * wa.abs().max().item())


@pytest.mark.parametrize("version", ["6", "goldfinch"])
def test_lm_loss_gradients_upstream_equal_the_full_logits(version):
    """Through a whole model: every parameter's gradient (embedding, blocks, head)."""
    model = tiny_model(version, n_layer=2, n_embd=64, head_size=16, vocab_size=97).train()
    tokens = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(6))
    targets = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(7))
    targets[0, :3] = IGNORE_INDEX
    ref = copy.deepcopy(model)
    logits, _ = ref(tokens)
    top, idx = logits.detach().max(-1, keepdim=True)
    extra = torch.zeros_like(logits).scatter_(-1, idx, top * 1e-4 / 22)
    (F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                     reduction="sum") * 0.1 + (logits * extra).sum()).backward()
    with head_loss_options(4, 22):
        loss, _, out = lm_loss(model, {"input_ids": tokens, "targets": targets})
    (loss * 0.1).backward()
    assert out is None
    assert_model_grads_close({n: p.grad for n, p in model.named_parameters()},
                             {n: p.grad for n, p in ref.named_parameters()})


def test_vlm_loss_is_the_target_positions_cross_entropy():
    from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID
    from rwkv_mm.vision.model import vlm_loss
    from vision.vision_test_utils import tiny_visual_model

    model = tiny_visual_model("6", reverse=True).train()
    g, P = torch.Generator().manual_seed(8), model.num_image_tokens
    ids = torch.randint(10, 300, (2, 9 + P), generator=g)
    ids[:, 1:1 + P] = IMAGE_TOKEN_ID
    targets = torch.randint(10, 300, (2, 9 + P), generator=g)
    targets[:, :1 + P] = IGNORE_INDEX
    batch = {"input_ids": ids, "targets": targets, "image_features": torch.randn(2, P, 32, generator=g)}
    ref = copy.deepcopy(model)
    hidden, _ = ref(ids, image_features=batch["image_features"], return_hidden=True)
    logits = ref.rwkv.head(hidden)  # [B, T, V] all of them, here
    keep = targets != IGNORE_INDEX
    top, idx = logits.detach().max(-1, keepdim=True)
    extra = torch.zeros_like(logits).scatter_(-1, idx, top * 1e-4 / 30) * keep.unsqueeze(-1)
    (F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                     reduction="sum") / keep.sum() + (logits * extra).sum()).backward()
    with head_loss_options(5, 30):
        loss, n, out = vlm_loss(model, batch)
    (loss / n).backward()
    assert out is None and int(n) == int(keep.sum())
    assert_model_grads_close({n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                             {n: p.grad for n, p in ref.named_parameters() if p.grad is not None})


def test_trainer_steps_equal_with_and_without_chunks(tmp_path):
    """train.loss_chunk=3 (12 positions per sample: chunks that don't divide them) against 0
    (the plain path, L2Wrap through the trainer's fallback): the same losses and gradients."""
    from rwkv_mm.errors import ConfigError
    from rwkv_mm.training.trainer import Trainer
    from training.test_trainer import config
    from training.test_trainer_strength import record_gradients
    from training.toy_run import collate, make_dataset, make_model

    with pytest.raises(ConfigError, match="loss_chunk"):
        config(loss_chunk=-1)
    runs = []
    for chunk in (0, 3):
        trainer = Trainer(make_model(), config(max_steps=3, loss_chunk=chunk), tmp_path / str(chunk),
                          make_dataset(), collate, device="cpu")
        seen = record_gradients(trainer)
        runs.append(([trainer.train_step()["loss"] for _ in range(3)], seen))
    (plain, grads_plain), (chunked, grads_chunked) = runs
    assert chunked == pytest.approx(plain, rel=1e-6)
    assert len(grads_plain) == len(grads_chunked) == 3
    for step_plain, step_chunked in zip(grads_plain, grads_chunked):
        assert_model_grads_close(step_chunked, step_plain)
