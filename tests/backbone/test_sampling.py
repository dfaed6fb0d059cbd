"""Tests for rwkv_mm.backbone.sampling."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rwkv_mm.backbone.errors import ConfigError, UserError
from rwkv_mm.backbone.sampling import (
    NonFiniteLogitsError,
    RepetitionPenalty,
    Sampler,
    SamplingConfig,
    check_finite_logits,
    sample_logits,
    top_k_top_p_mask,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def counts_of(samples: list[int], n: int) -> list[int]:
    out = [0] * n
    for s in samples:
        out[s] += 1
    return out


# --------------------------------------------------------------------------- #
# config


def test_defaults_and_presets():
    cfg = SamplingConfig()
    assert (cfg.temperature, cfg.top_p, cfg.top_k) == (1.0, 0.85, 0)
    assert (cfg.presence_penalty, cfg.frequency_penalty, cfg.penalty_decay) == (0.0, 0.0, 0.996)
    assert not cfg.greedy and not cfg.is_greedy and not cfg.uses_penalties
    chat = SamplingConfig.chat(temperature=1.2)
    assert (chat.temperature, chat.top_p, chat.presence_penalty, chat.frequency_penalty) == (
        1.2, 0.3, 0.5, 0.5)
    assert SamplingConfig(temperature=0).is_greedy
    assert SamplingConfig(greedy=True).is_greedy
    assert SamplingConfig.from_dict({"top_k": 5}).top_k == 5
    with pytest.raises(ValueError, match="unknown"):
        SamplingConfig.from_dict({"topk": 5})


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"top_p": -0.01}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"presence_penalty": math.inf}, "presence_penalty"),
        ({"frequency_penalty": math.nan}, "frequency_penalty"),
        ({"penalty_decay": 1.5}, "penalty_decay"),
        ({"penalty_decay": -0.5}, "penalty_decay"),
        ({"greedy": 1}, "greedy"),
    ],
)
def test_bad_values_rejected(kwargs, field):
    with pytest.raises(ConfigError, match=field) as info:  # a user's mistake: exit 2, key named
        SamplingConfig(**kwargs)
    assert info.value.key == field


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="topk.*valid options: .*top_k"):
        SamplingConfig.from_dict({"topk": 5})


def test_config_is_immutable_and_revalidated():
    cfg = SamplingConfig()
    with pytest.raises(AttributeError):
        cfg.top_p = 0.5  # type: ignore[misc]
    from dataclasses import replace

    with pytest.raises(ValueError):
        replace(cfg, top_p=2.0)


# --------------------------------------------------------------------------- #
# filtering


HAND = torch.tensor([0.10, 0.40, 0.05, 0.30, 0.15])  # sorted: 1, 3, 4, 0, 2


@pytest.mark.parametrize(
    "top_p, expected",
    [
        (0.0, {1}),
        (0.35, {1}),
        (0.5, {1, 3}),
        (0.8, {1, 3, 4}),
        (0.9, {1, 3, 4, 0}),
        (0.97, {0, 1, 2, 3, 4}),
        (1.0, {0, 1, 2, 3, 4}),
    ],
)
def test_top_p_mask_hand_made(top_p, expected):
    keep = top_k_top_p_mask(HAND, top_p=top_p)
    assert set(torch.nonzero(keep).flatten().tolist()) == expected


def test_top_p_mask_is_tie_inclusive_and_batched():
    probs = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.1, 0.1, 0.1]])
    keep = top_k_top_p_mask(probs, top_p=0.5)
    assert keep.tolist() == [[True, True, False, False], [True, False, False, False]]
    keep = top_k_top_p_mask(probs, top_p=0.7)  # reaches 0.7 inside the 0.2 tie: keep both
    assert keep.tolist() == [[True, True, True, True], [True, False, False, False]]


def test_top_k_mask_and_intersection():
    keep = top_k_top_p_mask(HAND, top_k=2)
    assert set(torch.nonzero(keep).flatten().tolist()) == {1, 3}
    keep = top_k_top_p_mask(HAND, top_k=4, top_p=0.8)  # p-set {1,3,4} within k-set
    assert set(torch.nonzero(keep).flatten().tolist()) == {1, 3, 4}
    keep = top_k_top_p_mask(HAND, top_k=2, top_p=0.9)
    assert set(torch.nonzero(keep).flatten().tolist()) == {1, 3}
    assert top_k_top_p_mask(HAND, top_k=99).all()


def test_top_p_sampling_frequencies():
    logits = HAND.log()
    cfg = SamplingConfig(top_p=0.8)
    samples = sample_logits(logits.expand(6000, 5), cfg, gen(1)).tolist()
    counts = counts_of(samples, 5)
    assert counts[0] == counts[2] == 0  # outside the nucleus
    kept = torch.tensor([0.40, 0.30, 0.15])
    expected = kept / kept.sum()
    observed = torch.tensor([counts[1], counts[3], counts[4]], dtype=torch.float) / len(samples)
    assert torch.allclose(observed, expected, atol=0.03)


def test_temperature_applied_after_filtering():
    # The nucleus is chosen at T=1 ({1, 3, 4} for top_p=0.8); T=2 flattens only it.
    logits = HAND.log()
    cfg = SamplingConfig(top_p=0.8, temperature=2.0)
    samples = sample_logits(logits.expand(6000, 5), cfg, gen(2)).tolist()
    counts = counts_of(samples, 5)
    assert counts[0] == counts[2] == 0
    kept = torch.tensor([0.40, 0.30, 0.15]) ** 0.5
    expected = kept / kept.sum()
    observed = torch.tensor([counts[1], counts[3], counts[4]], dtype=torch.float) / len(samples)
    assert torch.allclose(observed, expected, atol=0.03)


# --------------------------------------------------------------------------- #
# sampling


def test_top_k_one_equals_argmax():
    torch.manual_seed(0)
    g = gen(3)
    cfg = SamplingConfig(top_k=1, top_p=1.0, temperature=1.7)
    for _ in range(50):
        logits = torch.randn(1000) * 3
        assert sample_logits(logits, cfg, g) == int(logits.argmax())
    batch = torch.randn(8, 1000)
    assert torch.equal(sample_logits(batch, cfg, g), batch.argmax(-1))


@pytest.mark.parametrize(
    "cfg",
    [
        SamplingConfig(temperature=0.0),
        SamplingConfig(greedy=True, temperature=5.0, top_p=1.0),
        SamplingConfig(temperature=1e-4, top_p=1.0),
        SamplingConfig(temperature=1e-300, top_p=1.0),
        SamplingConfig(top_p=0.0),
    ],
)
def test_greedy_limits(cfg):
    torch.manual_seed(1)
    g = gen(4)
    for _ in range(30):
        logits = torch.randn(512) * 2
        assert sample_logits(logits, cfg, g) == int(logits.argmax())


def test_seeded_determinism():
    torch.manual_seed(5)
    logits = torch.randn(4, 2000)
    cfg = SamplingConfig(temperature=1.3, top_p=0.95, top_k=100)
    a = [sample_logits(logits, cfg, gen(123)).tolist() for _ in range(3)]
    g1, g2 = gen(7), gen(7)
    seq1 = [sample_logits(logits[0], cfg, g1) for _ in range(50)]
    seq2 = [sample_logits(logits[0], cfg, g2) for _ in range(50)]
    assert a[0] == a[1] == a[2]
    assert seq1 == seq2
    seq3 = [sample_logits(logits[0], cfg, gen(8)) for _ in range(50)]
    assert seq3 != seq1


def test_return_types_dtypes_and_bans():
    torch.manual_seed(6)
    logits = torch.randn(16, dtype=torch.bfloat16)
    tok = sample_logits(logits, SamplingConfig(), gen())
    assert isinstance(tok, int) and 0 <= tok < 16
    batch = torch.randn(3, 16, dtype=torch.float16)
    out = sample_logits(batch, SamplingConfig(top_p=1.0), gen())
    assert out.shape == (3,) and out.dtype == torch.long
    banned = torch.zeros(10)
    banned[[0, 3, 7]] = -math.inf
    g = gen(9)
    draws = {sample_logits(banned, SamplingConfig(top_p=1.0), g) for _ in range(300)}
    assert draws == set(range(10)) - {0, 3, 7}
    with pytest.raises(ValueError):
        sample_logits(torch.zeros(2, 2, 2))


# --------------------------------------------------------------------------- #
# repetition penalty


def test_penalty_formula_and_decay():
    d, pres, freq = 0.9, 0.7, 0.25
    cfg = SamplingConfig(presence_penalty=pres, frequency_penalty=freq, penalty_decay=d)
    pen = RepetitionPenalty(cfg, 10)
    logits = torch.arange(10, dtype=torch.float32)
    assert torch.equal(pen.apply(logits), logits)  # nothing seen yet
    for t in (5, 7, 5):
        pen.update(t)
    c5, c7 = d * d + 1.0, d  # 5: 1 -> d -> d*d + 1 ; 7: 1 -> d
    assert pen.counts[5].item() == pytest.approx(c5, rel=1e-6)
    assert pen.counts[7].item() == pytest.approx(c7, rel=1e-6)
    out = pen.apply(logits)
    expected = logits.clone()
    expected[5] -= pres + c5 * freq
    expected[7] -= pres + c7 * freq
    assert torch.allclose(out, expected, atol=1e-6)
    others = [i for i in range(10) if i not in (5, 7)]
    assert torch.equal(out[others], logits[others])
    pen.update(1)  # decay touches every count
    assert pen.counts[5].item() == pytest.approx(c5 * d, rel=1e-6)
    assert pen.counts[1].item() == 1.0
    pen.reset()
    assert torch.equal(pen.apply(logits), logits)


def test_presence_outlives_decayed_count():
    cfg = SamplingConfig(presence_penalty=1.0, frequency_penalty=2.0, penalty_decay=0.0)
    pen = RepetitionPenalty(cfg, 4)
    pen.update(2)
    pen.update(3)  # decay 0 wipes token 2's count but it stays "seen"
    out = pen.apply(torch.zeros(4))
    assert out.tolist() == [0.0, 0.0, -1.0, -3.0]


def test_penalty_matches_chatrwkv_loop():
    # Re-implementation of ChatRWKV's dict-based occurrence bookkeeping.
    rng = random.Random(0)
    V, pres, freq, d = 50, 0.4, 0.3, 0.996
    cfg = SamplingConfig(presence_penalty=pres, frequency_penalty=freq, penalty_decay=d)
    pen = RepetitionPenalty(cfg, V)
    occurrence: dict[int, float] = {}
    logits = torch.randn(V, generator=gen(0))
    for _ in range(300):
        tok = rng.randrange(V) if rng.random() < 0.7 else rng.randrange(5)
        for k in occurrence:
            occurrence[k] *= d
        occurrence[tok] = occurrence.get(tok, 0.0) + 1.0
        pen.update(tok)
    expected = logits.clone()
    for k, c in occurrence.items():
        expected[k] -= pres + c * freq
    assert torch.allclose(pen.apply(logits), expected, atol=1e-5)


def test_penalty_batched_and_weights():
    cfg = SamplingConfig(presence_penalty=1.0, frequency_penalty=1.0, penalty_decay=1.0)
    pen = RepetitionPenalty(cfg, 5, batch_size=2)
    pen.update(torch.tensor([1, 4]))
    pen.update([1, 1])
    out = pen.apply(torch.zeros(2, 5))
    assert out.tolist() == [[0, -3, 0, 0, 0], [0, -2, 0, 0, -2]]
    w = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0])  # token 1 counts nothing (presence only)
    pen = RepetitionPenalty(cfg, 5, token_weights=w)
    pen.update(1)
    pen.update(1)
    pen.update(2)
    assert pen.apply(torch.zeros(5)).tolist() == [0, -1, -2, 0, 0]


def test_penalty_errors_and_noop():
    pen = RepetitionPenalty(SamplingConfig(), 5)
    x = torch.zeros(5)
    pen.update(3)
    assert pen.apply(x) is x  # penalties off
    with pytest.raises(ValueError, match="shape"):
        pen.apply(torch.zeros(6))
    with pytest.raises(ValueError, match="out of range"):
        pen.update(5)
    with pytest.raises(ValueError):
        pen.update(torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        RepetitionPenalty(SamplingConfig(), 5, token_weights=torch.ones(4))


def test_sampler_reproducible_and_penalised():
    cfg = SamplingConfig(top_p=1.0, presence_penalty=100.0)
    logits = torch.zeros(20)
    runs = []
    for _ in range(2):
        s = Sampler(cfg, 20, seed=11)
        runs.append([s(logits) for _ in range(20)])
    assert runs[0] == runs[1]
    assert sorted(runs[0]) == list(range(20))  # huge presence penalty: no repeats
    b = Sampler(SamplingConfig(greedy=True), 6, batch_size=2)
    out = b(torch.eye(6)[:2])
    assert out.tolist() == [0, 1] and b.penalty.seen[0, 0] and b.penalty.seen[1, 1]


# --------------------------------------------------------------------------- #
# non-finite logits (NaN weights, an overflow in fp16): an error, never a token


def _bad_logits(kind: str, batched: bool) -> torch.Tensor:
    x = torch.randn(2, 50, generator=gen(0))
    row = x[1]
    if kind == "NaN":
        row[7] = math.nan
    elif kind == "+inf":
        row[7] = math.inf
    else:
        row[:] = -math.inf  # every token banned
    return x if batched else x[1]


@pytest.mark.parametrize("kind", ["NaN", "+inf", "-inf"])
@pytest.mark.parametrize("cfg", [SamplingConfig(temperature=0.0), SamplingConfig(top_p=1.0),
                                 SamplingConfig(top_k=5, temperature=0.7)], ids=["greedy", "sample", "topk"])
@pytest.mark.parametrize("batched", [False, True], ids=["single", "batched"])
def test_non_finite_logits_raise_naming_the_token(kind, cfg, batched):
    # before: greedy argmax of NaN logits returned a token (0: "end of text", so nothing was
    # generated, exit 0); sampling failed inside torch.multinomial (an internal error)
    logits = _bad_logits(kind, batched)
    with pytest.raises(NonFiniteLogitsError, match="at token 7") as info:
        sample_logits(logits, cfg, gen(), step=7)
    assert isinstance(info.value, UserError) and info.value.step == 7
    if kind == "-inf":
        assert "every logit is -inf" in str(info.value)
    else:
        assert f"non-finite logits ({kind})" in str(info.value)
        assert "weights hold NaN/Inf or overflowed" in str(info.value)


def test_non_finite_check_accepts_banned_tokens_and_half_precision():
    x = torch.randn(3, 40, generator=gen(1)).half()
    x[:, :10] = -math.inf  # banned tokens are fine while one token is left
    check_finite_logits(x)
    assert 10 <= sample_logits(x, SamplingConfig(temperature=0.0))[0] < 40
    big = torch.full((8,), 70000.0).half()  # overflows to inf in fp16
    with pytest.raises(NonFiniteLogitsError, match="inf"):
        sample_logits(big, SamplingConfig(temperature=0.0))


def test_sampler_counts_tokens_for_the_error():
    s = Sampler(SamplingConfig(top_p=1.0), 10, seed=0)
    for _ in range(3):
        s(torch.zeros(10))
    with pytest.raises(NonFiniteLogitsError, match="at token 4"):
        s(torch.full((10,), math.nan))
