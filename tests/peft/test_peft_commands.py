"""train.peft through the music runner and the commands: the run's adapter folder and merged
model.pth, `rwkv-mm merge`, `--adapter` on `generate` and `music generate`, and the errors."""

from __future__ import annotations

import json

import pytest
import torch

from robustness.cli_utils import assert_user_error, run_cli
from rwkv_mm.backbone import load_model, read_state_dict
from rwkv_mm.training.adapter_files import CONFIG_NAME, WEIGHTS_NAME
from rwkv_mm.training.run_dir import classify

FAST = ["data.ctx_len=64", "data.max_train_tunes=64", "data.max_validation_tunes=8", "train.max_steps=3",
        "train.batch_size=4", "train.eval_every=3", "train.eval_batches=1", "train.save_every=3",
        "train.log_every=1", "generate.n_tunes=2", "generate.max_bytes=60", "train.lr=5e-2"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny byte-level Finch base (bf16 on disk, as official files are) and a LoRA run on it."""
    tmp = tmp_path_factory.mktemp("peft_music")
    base = tmp / "base.pth"
    assert run_cli("init", "--out", base, "--version", "6", "--n-layer", "3", "--n-embd", "64",  # 24 targets:
                   "--head-size", "16", "--vocab-size", "128", "--seed", "1").rc == 0  # peft shortens 20+
    sd = read_state_dict(base)
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, base)
    run_dir = tmp / "run"
    result = run_cli("train", "music/abc_tiny_lora", f"init_from={base}", *FAST, "--run-dir", run_dir)
    assert result.rc == 0, result.err
    return tmp, base, run_dir


def test_the_run_writes_the_adapter_and_the_merged_model(lora_run):
    tmp, base, run_dir = lora_run
    assert sorted(p.name for p in (run_dir / "adapter").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["adapter"] == str(run_dir / "adapter") and summary["steps"] == 3
    trained = load_model(run_dir / "model.pth")  # official layout: plain names
    start = load_model(base)
    changed = [k for k, v in start.state_dict().items() if not torch.equal(v, trained.state_dict()[k])]
    assert changed and all(k.split(".")[2:4] in (["att", "receptance"], ["att", "key"], ["att", "value"],
                                                 ["att", "output"], ["att", "gate"], ["ffn", "key"],
                                                 ["ffn", "receptance"], ["ffn", "value"]) for k in changed)
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(".lora_A." in k for k in ckpt) and any(".base_layer." in k for k in ckpt)
    assert classify(run_dir)[1] == []  # adapter/ is a run output: --overwrite removes it, nothing is foreign


def test_a_lora_run_resumes_from_the_command_line(lora_run, tmp_path):
    import shutil

    _, base, run_dir = lora_run
    shutil.copytree(run_dir, tmp_path / "run")
    result = run_cli("train", "music/abc_tiny_lora", f"init_from={base}", *FAST, "train.max_steps=4",
                     "--run-dir", tmp_path / "run", "--resume")
    assert result.rc == 0, result.err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4
    assert read_state_dict(tmp_path / "run" / "adapter" / WEIGHTS_NAME).keys() == \
        read_state_dict(run_dir / "adapter" / WEIGHTS_NAME).keys()


def test_merge_command_writes_the_merged_official_file(lora_run, tmp_path):
    _, base, run_dir = lora_run
    out = tmp_path / "merged.pth"
    result = run_cli("merge", "--base", base, "--adapter", run_dir / "adapter", "--out", out)
    assert result.rc == 0, result.err
    merged = read_state_dict(out)
    assert set(merged) == set(read_state_dict(base)) and merged["emb.weight"].dtype == torch.bfloat16
    exported = read_state_dict(run_dir / "model.pth")  # fp32: the run's own merge
    for key, value in merged.items():  # the same fp32 merge, rounded to the base's bf16
        assert torch.equal(value, exported[key].to(torch.bfloat16)), key
    again = run_cli("merge", "--base", base, "--adapter", run_dir / "adapter", "--out", out)
    assert_user_error(again, str(out), "--overwrite")
    assert run_cli("merge", "--base", base, "--adapter", run_dir / "adapter", "--out", out, "--overwrite").rc == 0


def test_generate_with_the_adapter_gives_the_merged_models_text(lora_run, tmp_path):
    _, base, run_dir = lora_run
    merged = tmp_path / "merged.safetensors"  # fp32: exactly the merged weights
    assert run_cli("merge", "--base", base, "--adapter", run_dir / "adapter", "--out", merged, "--dtype", "fp32").rc == 0
    common = ("--prompt", "X:1\n", "--max-tokens", "40", "--temperature", "0", "--tokenizer", "abc-bytes")
    with_adapter = run_cli("generate", "--checkpoint", base, "--adapter", run_dir / "adapter", *common)
    plain = run_cli("generate", "--checkpoint", merged, *common)
    without = run_cli("generate", "--checkpoint", base, *common)
    assert with_adapter.rc == plain.rc == without.rc == 0, with_adapter.err
    assert with_adapter.out == plain.out and with_adapter.out != without.out


def test_music_generate_takes_the_adapter(lora_run, tmp_path):
    _, base, run_dir = lora_run
    args = ("--n", "1", "--max-bytes", "40", "--temperature", "0", "--top-k", "0")
    assert run_cli("music", "generate", "--checkpoint", base, "--adapter", run_dir / "adapter", *args,
                   "--out", tmp_path / "a").rc == 0
    assert run_cli("music", "generate", "--checkpoint", run_dir / "model.pth", *args, "--out", tmp_path / "b").rc == 0
    assert (tmp_path / "a" / "tune_000.abc").read_text() == (tmp_path / "b" / "tune_000.abc").read_text()


def test_adapter_errors_name_the_folder_the_file_or_the_misfit(lora_run, tmp_path):
    tmp, base, run_dir = lora_run
    common = ("--prompt", "X", "--max-tokens", "2", "--tokenizer", "abc-bytes")
    missing = tmp_path / "nowhere"
    assert_user_error(run_cli("generate", "--checkpoint", base, "--adapter", missing, *common), str(missing))
    half = tmp_path / "half"
    half.mkdir()
    (half / CONFIG_NAME).write_text((run_dir / "adapter" / CONFIG_NAME).read_text())
    assert_user_error(run_cli("generate", "--checkpoint", base, "--adapter", half, *common),
                      str(half / WEIGHTS_NAME))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CONFIG_NAME).write_text("{not json")
    (broken / WEIGHTS_NAME).write_bytes((run_dir / "adapter" / WEIGHTS_NAME).read_bytes())
    assert_user_error(run_cli("generate", "--checkpoint", base, "--adapter", broken, *common), str(broken / CONFIG_NAME))
    wider = tmp / "wider.pth"  # other shapes, same module names
    assert run_cli("init", "--out", wider, "--version", "6", "--n-layer", "3", "--n-embd", "96",
                   "--head-size", "16", "--vocab-size", "128").rc == 0
    assert_user_error(run_cli("merge", "--base", wider, "--adapter", run_dir / "adapter", "--out", tmp_path / "m.pth"),
                      "do not fit", str(run_dir / "adapter"))
    shallow = tmp / "shallow.pth"  # other module names (one layer)
    assert run_cli("init", "--out", shallow, "--version", "6", "--n-layer", "1", "--n-embd", "64",
                   "--head-size", "16", "--vocab-size", "128").rc == 0
    assert_user_error(run_cli("generate", "--checkpoint", shallow, "--adapter", run_dir / "adapter", *common),
                      "blocks.1.", str(run_dir / "adapter"))
    assert not (tmp_path / "m.pth").exists()
