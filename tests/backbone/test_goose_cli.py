"""`rwkv-mm init --version 7`, `rwkv-mm info` and `rwkv-mm generate` with a Goose model."""

from __future__ import annotations

from rwkv_mm.backbone import Goose, load_model
from robustness.cli_utils import assert_user_error, run_cli


def test_init_info_and_generate(tmp_path):
    out = tmp_path / "goose.pth"
    made = run_cli("init", "--version", "7", "--n-layer", "2", "--n-embd", "64", "--head-size", "16",
                   "--out", str(out), cwd=tmp_path)
    assert made.rc == 0, made.err
    assert "RWKV-7 L=2 D=64 V=65536" in made.out
    model = load_model(out)
    assert isinstance(model, Goose) and model.config.head_size == 16
    info = run_cli("info", str(out), cwd=tmp_path)
    assert info.rc == 0, info.err
    lines = {line.split()[0]: line.split()[-1] for line in info.out.splitlines()[1:]}
    assert lines["version"] == "7" and lines["dim_ffn"] == "256" and lines["g_lora_rank"] == "32"
    assert lines["parameters"] == f"{sum(p.numel() for p in model.parameters()):,}"
    assert "tm_lora_rank" not in lines
    gen = run_cli("generate", "--checkpoint", str(out), "--prompt", "Hello", "--max-tokens", "4",
                  "--seed", "1", cwd=tmp_path)
    assert gen.rc == 0, gen.err
    assert gen.out.startswith("Hello") and "RWKV-7" in gen.err


def test_init_refuses_what_goose_cannot_be(tmp_path):
    assert_user_error(run_cli("init", "--version", "7", "--n-embd", "60", "--head-size", "16",
                              "--out", str(tmp_path / "x.pth"), cwd=tmp_path), "--n-embd 60")
