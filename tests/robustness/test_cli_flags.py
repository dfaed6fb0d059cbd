"""Command-line flags are checked when argparse reads them (`rwkv-mm generate: error: argument
--top-k: ...`, exit 2, nothing loaded or written), and decoding with non-finite logits is an
error naming the token instead of an empty "success"."""

from __future__ import annotations

import argparse

import pytest
import torch

from rwkv_mm.backbone import save_model
from rwkv_mm.cli_types import float_in, int_in, probability, seed, torch_device, torch_dtype
from robustness.cli_utils import assert_user_error, run_cli
from rwkv_test_utils import tiny_model


def assert_flag_error(result, flag: str, *culprits: str) -> None:
    """argparse's own report: exit 2, `error: argument FLAG: ...` naming the value, no traceback."""
    assert result.rc == 2, f"exit {result.rc}, stderr:\n{result.err}"
    assert "Traceback" not in result.err, result.err
    line = [ln for ln in result.err.splitlines() if "error:" in ln][-1]
    assert f"error: argument {flag}:" in line, line
    for culprit in culprits:
        assert culprit in line, f"{culprit!r} not in {line!r}"


GEN = ["generate", "--checkpoint", "missing.pth", "--prompt", "Hi"]
MUSIC_GEN = ["music", "generate", "--checkpoint", "missing.pth"]
EVAL_POS = ["music", "eval-positions", "--checkpoint", "missing.pth"]


@pytest.mark.parametrize("argv, flag, value", [
    (GEN + ["--top-k", "-1"], "--top-k", "-1"),
    (GEN + ["--top-k", "2.5"], "--top-k", "2.5"),
    (GEN + ["--top-p", "1.5"], "--top-p", "1.5"),
    (GEN + ["--top-p", "nan"], "--top-p", "nan"),
    (GEN + ["--temperature", "-1"], "--temperature", "-1"),
    (GEN + ["--temperature", "nan"], "--temperature", "nan"),
    (GEN + ["--temperature", "inf"], "--temperature", "inf"),
    (GEN + ["--max-tokens", "-5"], "--max-tokens", "-5"),
    (GEN + ["--max-tokens", "0"], "--max-tokens", "0"),
    (GEN + ["--threads", "-1"], "--threads", "-1"),
    (GEN + ["--penalty-decay", "2"], "--penalty-decay", "2"),
    (GEN + ["--presence-penalty", "nan"], "--presence-penalty", "nan"),
    (GEN + ["--frequency-penalty", "inf"], "--frequency-penalty", "inf"),
    (GEN + ["--seed", "-1"], "--seed", "-1"),
    (GEN + ["--seed", str(2**70)], "--seed", str(2**70)),
    (GEN + ["--tokenizer", "nope"], "--tokenizer", "nope"),
    (GEN + ["--dtype", "fp8"], "--dtype", "fp8"),
    (GEN + ["--device", "foo"], "--device", "foo"),
    (GEN + ["--device", "cuda:99"], "--device", "cuda:99"),
    (["generate", "--checkpoint", "missing.pth", "--prompt", ""], "--prompt", "''"),
    (["init", "--out", "x.pth", "--n-layer", "0"], "--n-layer", "0"),
    (["init", "--out", "x.pth", "--head-size", "3"], "--head-size", "3"),
    (["init", "--out", "x.pth", "--head-size", "18"], "--head-size", "18"),
    (["init", "--out", "x.pth", "--version", "9"], "--version", "9"),
    (["init", "--out", "x.pth", "--vocab-size", "0"], "--vocab-size", "0"),
    (["init", "--out", "x.pth", "--n-embd", "-64"], "--n-embd", "-64"),
    (MUSIC_GEN + ["--n", "0"], "--n", "0"),
    (MUSIC_GEN + ["--top-k", "-1"], "--top-k", "-1"),
    (MUSIC_GEN + ["--top-p", "0"], "--top-p", "0"),
    (MUSIC_GEN + ["--top-p", "2"], "--top-p", "2"),
    (MUSIC_GEN + ["--temperature", "nan"], "--temperature", "nan"),
    (MUSIC_GEN + ["--max-bytes", "-3"], "--max-bytes", "-3"),
    (MUSIC_GEN + ["--min-bars", "-1"], "--min-bars", "-1"),
    (MUSIC_GEN + ["--seed", "-1"], "--seed", "-1"),
    (EVAL_POS + ["--max-len", "0", "--sigma", "-1"], "--max-len", "0"),
    (EVAL_POS + ["--sigma", "-1"], "--sigma", "-1"),
    (EVAL_POS + ["--sigma", "nan"], "--sigma", "nan"),
    (EVAL_POS + ["--batch-size", "0"], "--batch-size", "0"),
    (EVAL_POS + ["--max-tunes", "-2"], "--max-tunes", "-2"),
])
def test_bad_flag_is_reported_by_argparse(tmp_path, argv, flag, value):
    # before: a ValueError deep inside (internal error, exit 1), a RuntimeError from torch, or
    # nonsense with exit 0 (--max-tokens -5 printed nothing, --n 0 "0/0 tunes parse")
    result = run_cli(*argv, cwd=tmp_path)
    assert_flag_error(result, flag, value)
    assert list(tmp_path.iterdir()) == []  # nothing loaded, nothing written


def test_init_cross_flag_checks_name_the_flags(tmp_path):
    result = run_cli("init", "--out", "x.pth", "--n-embd", "100", "--head-size", "64", cwd=tmp_path)
    assert_user_error(result, "--n-embd 100", "--head-size 64")
    result = run_cli("init", "--out", "x.pth", "--version", "goldfinch", "--n-layer", "1",
                     "--n-embd", "64", "--head-size", "16", cwd=tmp_path)
    assert_user_error(result, "--n-layer 1", "GoldFinch")
    assert list(tmp_path.iterdir()) == []


def test_flag_types():
    assert int_in(min=1)("7") == 7 and probability("1") == 1.0 and seed("0") == 0
    assert float_in(gt=0.0, max=1.0)("0.5") == 0.5 and torch_device("cpu") == "cpu"
    assert torch_dtype("bf16") is torch.bfloat16
    for parse, text in [(int_in(min=1), "0"), (int_in(max=3), "4"), (int_in(), "1.0"),
                        (float_in(), "nan"), (float_in(), "-inf"), (float_in(gt=0.0), "0"),
                        (probability, "1.0001"), (seed, "-1"), (torch_device, "tpu"),
                        (torch_dtype, "float32")]:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace(".", r"\.")):
            parse(text)


# ----------------------------------------------------------------------------- non-finite logits
def _overflowing(vocab_size: int):
    """Finite weights whose logits overflow fp32: +inf for byte 'A', -inf for 'B' (a checkpoint
    loader's NaN check cannot catch this; only the decoding loop can)."""
    model = tiny_model(version="6", n_layer=1, n_embd=64, head_size=16, vocab_size=vocab_size)
    with torch.no_grad():
        model.ln_out.weight.zero_()
        model.ln_out.bias.fill_(1.0)  # the last hidden state is all ones
        model.head.weight.zero_()
        model.head.weight[65] = 1e37  # 64 * 1e37 > fp32 max
        model.head.weight[66] = -1e37
    return model


@pytest.fixture(scope="module")
def overflow_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("overflow")
    return {"text": save_model(_overflowing(300), root / "text.pth"),
            "music": save_model(_overflowing(128), root / "music.pth")}


@pytest.mark.parametrize("temperature", ["0", "1"])
def test_generate_with_non_finite_logits_exits_2(overflow_ckpts, tmp_path, temperature):
    # before: greedy decoding printed the +inf token on and on (exit 0; with NaN weights it
    # printed nothing: argmax of NaN is token 0, end of text); sampling: internal error (exit 1)
    result = run_cli("generate", "--checkpoint", overflow_ckpts["text"], "--prompt", "a",
                     "--max-tokens", "5", "--temperature", temperature, cwd=tmp_path)
    assert_user_error(result, "non-finite logits", "at token 1", "overflowed")


def test_music_generate_with_non_finite_logits_exits_2(overflow_ckpts, tmp_path):
    result = run_cli("music", "generate", "--checkpoint", overflow_ckpts["music"], "--n", "2",
                     "--max-bytes", "20", "--out", tmp_path / "tunes", cwd=tmp_path)
    assert_user_error(result, "non-finite logits", "at token 1")


def test_generate_prompt_outside_the_vocabulary(overflow_ckpts, tmp_path):
    # a byte-level model (V=128) prompted through the World tokenizer ("Hi" is one token > 1000)
    result = run_cli("generate", "--checkpoint", overflow_ckpts["music"], "--prompt", "Hi",
                     cwd=tmp_path)
    assert_user_error(result, "outside the model's vocabulary [0, 128)", "tokenizer")


def test_music_commands_refuse_a_text_model(overflow_ckpts, tmp_path):
    for argv in (["music", "generate", "--checkpoint", overflow_ckpts["text"], "--out", "t"],
                 ["music", "eval-positions", "--checkpoint", overflow_ckpts["text"], "--tunes",
                  "data.abc", "--out", "p.png"]):
        (tmp_path / "data.abc").write_text("X:1\nK:G\n|abc|\n")
        assert_user_error(run_cli(*argv, cwd=tmp_path), "text.pth", "vocab_size 300")
