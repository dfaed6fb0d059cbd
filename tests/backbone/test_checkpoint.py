"""Checkpoint reading/writing: official layout round trips, size inference, clear errors."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import (CheckpointError, UnsupportedVersionError, config_from_state_dict,
                              detect_version, load_model, read_state_dict, save_model)
from rwkv_test_utils import tiny_model

TOKENS = torch.tensor([[1, 5, 9, 200, 13, 0, 77]])


def logits_of(model):
    with torch.no_grad():
        return model(TOKENS)[0]


@pytest.mark.parametrize("version", ["5", "6"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip(tmp_path, version, suffix):
    model = tiny_model(version=version, n_layer=2, n_embd=64, head_size=16, vocab_size=260)
    path = save_model(model, tmp_path / f"m{suffix}")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert torch.equal(logits_of(loaded), logits_of(model))
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temp file


def test_official_key_names_and_shapes(tmp_path):
    sd = tiny_model(version="6", n_layer=2, n_embd=64, head_size=16).state_dict()
    H, N, D = 4, 16, 64
    expected = {
        "emb.weight": (300, D), "blocks.0.ln0.weight": (D,), "blocks.1.ln1.bias": (D,),
        "blocks.0.att.time_maa_x": (1, 1, D), "blocks.0.att.time_maa_w1": (D, 160),
        "blocks.0.att.time_maa_w2": (5, 32, D), "blocks.0.att.time_decay": (1, 1, D),
        "blocks.0.att.time_decay_w1": (D, 64), "blocks.0.att.time_decay_w2": (64, D),
        "blocks.0.att.time_faaaa": (H, N), "blocks.0.att.gate.weight": (D, D),
        "blocks.0.att.ln_x.weight": (D,), "blocks.0.ffn.time_maa_k": (1, 1, D),
        "blocks.0.ffn.key.weight": (224, D), "blocks.0.ffn.value.weight": (D, 224),
        "ln_out.weight": (D,), "head.weight": (300, D),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "blocks.1.ln0.weight" not in sd
    eagle = tiny_model(version="5", n_layer=1, n_embd=64, head_size=16).state_dict()
    assert tuple(eagle["blocks.0.att.time_decay"].shape) == (H, N)
    assert tuple(eagle["blocks.0.att.time_mix_g"].shape) == (1, 1, D)
    assert tuple(eagle["blocks.0.ffn.time_mix_r"].shape) == (1, 1, D)


def test_sizes_are_inferred_from_shapes():
    model = tiny_model(version="6", n_layer=3, n_embd=96, head_size=32, vocab_size=128,
                       tm_lora_rank=8, decay_lora_rank=16, dim_ffn=320)
    config = config_from_state_dict(model.state_dict())
    assert config == model.config


def test_bf16_checkpoint_loads_in_requested_dtype(tmp_path):
    model = tiny_model(version="5", n_layer=1, n_embd=64, head_size=16).to(torch.bfloat16)
    path = save_model(model, tmp_path / "bf16.pth")
    assert read_state_dict(path)["blocks.0.att.key.weight"].dtype == torch.bfloat16
    assert load_model(path).emb.weight.dtype == torch.float32
    assert load_model(path, dtype=torch.bfloat16).head.weight.dtype == torch.bfloat16


def _save_sd(tmp_path, sd, name="bad.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = tiny_model(version="6", n_layer=2, n_embd=64, head_size=16).state_dict()
    del sd["blocks.1.att.key.weight"]
    sd["blocks.0.att.mystery"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.att.key.weight'\]") as err:
        load_model(_save_sd(tmp_path, sd))
    assert "blocks.0.att.mystery" in str(err.value) and "bad.pth" in str(err.value)


def test_wrong_shape_is_named(tmp_path):
    sd = tiny_model(version="5", n_layer=2, n_embd=64, head_size=16).state_dict()
    sd["blocks.1.ffn.value.weight"] = torch.zeros(64, 100)
    with pytest.raises(CheckpointError, match=r"blocks.1.ffn.value.weight: file \(64, 100\)"):
        load_model(_save_sd(tmp_path, sd))


def test_rwkv7_and_rwkv4_are_unsupported_with_a_clear_message(tmp_path):
    v7 = {"emb.weight": torch.zeros(10, 8), "blocks.0.att.r_k": torch.zeros(2, 4),  # RWKV-7 DeepEmbed
          "blocks.0.att.w0": torch.zeros(1, 1, 8), "blocks.0.ffn.s_emb.weight": torch.zeros(10, 32)}
    with pytest.raises(UnsupportedVersionError, match="RWKV-7"):
        load_model(_save_sd(tmp_path, v7, "v7.pth"))
    v4 = {"emb.weight": torch.zeros(10, 8), "blocks.0.att.time_first": torch.zeros(8),
          "blocks.0.att.time_decay": torch.zeros(8)}
    with pytest.raises(UnsupportedVersionError, match="RWKV-4"):
        load_model(_save_sd(tmp_path, v4, "v4.pth"))
    with pytest.raises(CheckpointError, match="emb.weight"):
        detect_version({"foo": torch.zeros(1)})


def test_loading_uses_weights_only(tmp_path):
    """A pickle that would run code on load is refused (torch.load(weights_only=True)), with a
    message of our own: torch's advice to retry with weights_only=False is not passed on."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.zeros(2, 2), "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="contains Python objects that are not tensors") as err:
        load_model(path)
    assert "evil.pth" in str(err.value) and "Re-running" not in str(err.value)


def test_missing_file_and_non_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_model(tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="flat dict of tensors"):
        load_model(path)


def _legacy_v5(model, with_gate: bool, real_time_first: bool):
    """Rewrite a gate-less/gated Eagle state dict in the RWKV-5.0/5.1 per-head layout."""
    H = model.config.n_head
    sd = {}
    for key, value in model.state_dict().items():
        if key.endswith("att.time_decay"):
            sd[key] = value[:, :1].reshape(H).clone()
        elif key.endswith("att.time_faaaa"):
            per_head = value[:, :1].reshape(H)
            if real_time_first:
                sd[key] = per_head.clone()
            else:
                sd[key.replace("time_faaaa", "time_first")] = torch.log(per_head).clone()
        elif not with_gate and ("att.gate" in key or "time_mix_g" in key):
            continue
        else:
            sd[key] = value
    return sd


@pytest.mark.parametrize("with_gate,real_time_first", [(False, False), (True, True)])
def test_legacy_rwkv5_per_head_layout_loads(tmp_path, with_gate, real_time_first):
    """RWKV-5.0/5.1 files (per-head decay/bonus, 5.0 without gate) map onto the Eagle block."""
    model = tiny_model(version="5", n_layer=2, n_embd=64, head_size=16, gate=with_gate)
    with torch.no_grad():  # make decay and bonus constant within each head, bonus > 0 for log()
        for block in model.blocks:
            block.att.time_decay.copy_(block.att.time_decay[:, :1].expand_as(block.att.time_decay))
            u = block.att.time_faaaa[:, :1].abs() + 0.1
            block.att.time_faaaa.copy_(u.expand_as(block.att.time_faaaa))
    sd = _legacy_v5(model, with_gate, real_time_first)
    assert detect_version(sd) == ("5.1" if with_gate else "5.0")
    loaded = load_model(_save_sd(tmp_path, sd, "legacy.pth"))
    assert loaded.config.gate == with_gate
    assert torch.allclose(logits_of(loaded), logits_of(model), atol=1e-5)
