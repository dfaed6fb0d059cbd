"""The FLOP meter against closed forms: a language model whose every weight trains costs
3·(2·matmul weights·uses + WKV) per token (`FAMILY_FORMULAS`, written out here independently
from the config), frozen weights cost less, no_grad parts only their forward, and a
recomputation under grad_cp is not counted."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from planning.probe_config import probe_config
from rwkv_mm.backbone import RWKVConfig, build_backbone, set_grad_checkpointing
from rwkv_mm.planning import estimate
from rwkv_mm.planning.flops import FAMILY_FORMULAS, FlopMeter


def closed_form_per_token(c: RWKVConfig, T: int) -> int:
    """Training FLOPs per token of the family's formula (head included)."""
    D, F_, V, N, R, Rd = c.n_embd, c.dim_ffn, c.vocab_size, c.head_size, c.tm_lora_rank, c.decay_lora_rank
    L = c.n_layer
    if c.version == "5":
        dense = L * (6 * D * D + 2 * D * F_) + D * V
        return 3 * (2 * dense + 7 * L * D * N)
    if c.version == "6":
        dense = L * (6 * D * D + 2 * D * F_ + 10 * D * R + 2 * D * Rd) + D * V
        return 3 * (2 * dense + 7 * L * D * N)
    g = c.n_gold_layer
    s = L - g
    Dc, Rv = c.key_cache_dim, c.gold_lora_rank
    dense = (s * (6 * D * D + 2 * D * F_ + 10 * D * R + 4 * D * Rd) + g * (3 * D * D + 2 * D * F_ + 6 * D * R + 4 * D * Rv)
             + D * Dc + (D + Dc) * D + D * V)
    return 3 * (2 * dense + 7 * s * D * N + 4 * g * T * D)


@pytest.mark.parametrize("version", ["5", "6", "goldfinch"])
def test_planned_flops_equal_the_family_formula(version):
    T = 128
    cfg = probe_config(version, 3, 128, 512, T)
    plan = estimate(cfg, runner="probe", device="cpu")
    assert plan.flops_per_sequence == T * closed_form_per_token(cfg.backbone, T)
    assert plan.formula == FAMILY_FORMULAS[version]


def _lm_step(model, tokens, targets) -> None:
    logits, _ = model(tokens)
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()


def test_meter_on_a_real_step_counts_forward_once_and_backward_by_rule():
    """On real CPU tensors (the trainer's first step): forward + backward of a fully trained
    Finch equals the closed form, with or without grad_cp (recomputation is not charged)."""
    torch.manual_seed(0)
    c = RWKVConfig(version="6", n_layer=2, n_embd=64, vocab_size=97, head_size=32)
    T = 48
    tokens, targets = torch.randint(0, 97, (2, T)), torch.randint(0, 97, (2, T))
    model = build_backbone(c)
    for cp in (False, True):
        set_grad_checkpointing(model, cp)
        with FlopMeter() as meter:
            _lm_step(model, tokens, targets)
        assert meter.total == 2 * T * closed_form_per_token(c, T)
        assert meter.backward == 2 * meter.forward
        assert len(meter.wkv_calls) == c.n_layer


def test_frozen_weights_and_no_grad_parts_cost_less():
    torch.manual_seed(0)
    w = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16)
    w.weight.requires_grad_(False)
    with FlopMeter() as meter:  # frozen weight, input needs no gradient: forward only
        w(x).sum()
    assert (meter.forward, meter.backward) == (2 * 4 * 16 * 8, 0)
    with FlopMeter() as meter:  # frozen weight in a part that passes gradients on: one product more
        w(x.requires_grad_()).sum().backward()
    assert meter.backward == meter.forward
    w.weight.requires_grad_(True)
    with FlopMeter() as meter, torch.no_grad():  # no_grad: forward only, counted apart
        w(x)
    assert meter.backward == 0 and meter.by_kind["forward only"] == meter.forward
