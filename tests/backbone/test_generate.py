"""Generation: recurrent decoding equals re-running the whole sequence; the CLI works end to end."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import SamplingConfig, generate_tokens, prefill, save_model
from rwkv_mm.backbone.errors import UserError
from rwkv_mm.backbone.sampling import NonFiniteLogitsError
from rwkv_mm.cli import main
from rwkv_test_utils import tiny_model


def test_greedy_decoding_equals_full_recomputation():
    model = tiny_model(version="6", n_layer=2, n_embd=64, head_size=16, vocab_size=300)
    prompt = [5, 17, 250, 3, 99, 42, 7]
    greedy = SamplingConfig(temperature=0.0)
    fast = list(generate_tokens(model, prompt, max_tokens=12, sampling=greedy, stop_tokens=()))
    seq, slow = list(prompt), []
    for _ in range(12):  # the quadratic way: the whole sequence again for every new token
        with torch.no_grad():
            logits, _ = model(torch.tensor([seq]))
        nxt = int(logits[0, -1].argmax())
        slow.append(nxt)
        seq.append(nxt)
    assert fast == slow


def test_prefill_in_pieces_equals_one_piece():
    model = tiny_model(version="5", n_layer=2, n_embd=64, head_size=16, vocab_size=300)
    prompt = list(range(1, 100))
    a, sa = prefill(model, prompt)
    b, sb = prefill(model, prompt, chunk_len=30)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(sa.wkv[1], sb.wkv[1], atol=1e-5)


def test_seeded_sampling_is_deterministic_and_stops_at_end_token():
    model = tiny_model(version="6", n_layer=1, n_embd=64, head_size=16, vocab_size=300)
    cfg = SamplingConfig(temperature=1.0, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5)
    a = list(generate_tokens(model, [1, 2, 3], 30, cfg, seed=123))
    b = list(generate_tokens(model, [1, 2, 3], 30, cfg, seed=123))
    assert a == b and 0 not in a
    with torch.no_grad():  # make token 0 certain: generation stops at once
        model.ln_out.weight.zero_()
        model.ln_out.bias.fill_(1.0)  # final hidden state = all ones
        model.head.weight.zero_()
        model.head.weight[0] = 1.0  # logit of token 0 = D, every other logit 0
    assert list(generate_tokens(model, [1, 2, 3], 30, SamplingConfig(temperature=0.0))) == []


def test_cli_init_info_and_generate(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pth"
    assert main(["init", "--out", str(ckpt), "--n-layer", "1", "--n-embd", "64", "--head-size", "16"]) == 0
    assert main(["info", str(ckpt)]) == 0
    assert "parameters" in capsys.readouterr().out
    args = ["generate", "--checkpoint", str(ckpt), "--prompt", "Hello", "--max-tokens", "8", "--seed", "1"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert first.out.startswith("Hello") and len(first.out) > len("Hello")
    assert main(args) == 0
    assert capsys.readouterr().out == first.out  # same seed, same text


def test_cli_reports_bad_checkpoint(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "missing.pth"), "--prompt", "x"]) == 2
    assert "missing.pth" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    torch.save({"emb.weight": torch.zeros(4, 4)}, bad)
    assert main(["info", str(bad)]) == 2
    assert "bad.pth" in capsys.readouterr().err


class _Poisoned(torch.nn.Module):
    """A model whose logits turn NaN from the `bad`-th generated token on (1-based)."""

    def __init__(self, inner, bad: int) -> None:
        super().__init__()
        self.inner, self.bad, self.calls = inner, bad, 0
        self.config, self.emb = inner.config, inner.emb

    def forward(self, tokens, state=None, **kw):
        self.calls += 1  # call 1 is the prefill: its logits choose token 1
        logits, state = self.inner(tokens, state, **kw)
        if self.calls >= self.bad:
            logits = torch.full_like(logits, float("nan"))
        return logits, state


@pytest.mark.parametrize("greedy", [True, False])
def test_non_finite_logits_stop_generation_naming_the_token(greedy):
    # before: greedy argmax of NaN logits is token 0 = end of text, so generation "succeeded"
    # with fewer (or zero) tokens; sampling crashed inside torch.multinomial
    model = tiny_model(version="6", n_layer=1, n_embd=64, head_size=16, vocab_size=300)
    cfg = SamplingConfig(temperature=0.0) if greedy else SamplingConfig(top_p=1.0)
    poisoned = _Poisoned(model, bad=3)
    got = []
    with pytest.raises(NonFiniteLogitsError, match="at token 3"):
        for token in generate_tokens(poisoned, [5, 6, 7], 10, cfg, seed=0, stop_tokens=()):
            got.append(token)
    assert len(got) == 2
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))  # NaN weights: the very first token
    with pytest.raises(NonFiniteLogitsError, match="at token 1"):
        list(generate_tokens(model, [5, 6, 7], 10, cfg))


def test_prompt_and_length_mistakes_are_user_errors():
    model = tiny_model(version="5", n_layer=1, n_embd=64, head_size=16, vocab_size=300)
    with pytest.raises(UserError, match="empty prompt"):
        prefill(model, [])
    with pytest.raises(UserError, match="token id 300 is outside the model's vocabulary"):
        prefill(model, [1, 300])  # e.g. the World tokenizer's ids for a byte-level model
    with pytest.raises(UserError, match="max_tokens=-5"):
        list(generate_tokens(model, [1, 2], -5))
