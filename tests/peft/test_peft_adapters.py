"""train.peft's adapters (LoRA / PiSSA / DoRA through Hugging Face peft) on our models: what
trains, merging, PiSSA's unchanged start, peft's own file format both ways, and the errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from peft_test_utils import fit, logits, tiny, tokens, train_config
from rwkv_mm.errors import UserError
from rwkv_mm.recipe import RecipeError, load_recipe
from rwkv_mm.training.adapter_files import CONFIG_NAME, WEIGHTS_NAME, load_adapter, save_adapter
from rwkv_mm.training.peft_config import PeftConfig
from rwkv_mm.training.peft_tuning import (adapter_layers, adapters_of, inject_adapters, merge_adapters,
                                          target_module_names, train_config_with_adapters)

FAMILIES = ["5", "6", "7"]  # Eagle, Finch, Goose


@torch.no_grad()
def perturb_adapters_(model, seed: int = 5) -> None:
    """Random adapter weights (LoRA starts with B = 0: a merge of that would test nothing)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("version", FAMILIES)
def test_default_targets_are_the_time_and_channel_mix_projections(version):
    model = tiny(version)
    names = target_module_names(model, PeftConfig())
    leaves = {n.split(".", 2)[2] for n in names}
    expected = {"att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"}
    expected |= {"att.gate", "ffn.receptance"} if version != "7" else set()  # Goose: g is a LoRA, no ffn.r
    assert leaves == expected and all(n.startswith("blocks.") for n in names)


@pytest.mark.parametrize("version", [*FAMILIES, "goldfinch"])
def test_base_plus_adapter_equals_the_merged_model(version):
    model = inject_adapters(tiny(version), PeftConfig(r=4, alpha=8))
    perturb_adapters_(model)
    unmerged = logits(model)
    base = logits(tiny(version))
    assert (unmerged - base).abs().max() > 1e-3  # the adapters do change the output
    merged = merge_adapters(model)
    assert not adapter_layers(merged) and adapters_of(merged) is None
    assert set(merged.state_dict()) == set(tiny(version).state_dict())  # plain names again
    torch.testing.assert_close(logits(merged), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("version, niter", [("5", 0), ("6", 0), ("6", 2)])
def test_pissa_leaves_the_output_unchanged_at_step_0(version, niter):
    base = logits(tiny(version))
    model = inject_adapters(tiny(version), PeftConfig(method="pissa", r=4, alpha=4, pissa_niter=niter))
    layer = adapter_layers(model)["blocks.0.att.key"]
    assert layer.lora_B["default"].weight.abs().max() > 0  # principal components, not zeros
    torch.testing.assert_close(logits(model), base, rtol=0, atol=1e-5)


def test_only_adapters_train_and_the_base_stays_bit_identical(tmp_path):
    model = tiny("6")
    before = copy.deepcopy(model.state_dict())
    losses, trainer = fit(model, train_config(PeftConfig(r=4, alpha=8)), tmp_path)
    assert len(losses) == 4
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert trainer.param_counts["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in trained)
    for name, value in model.state_dict().items():  # every base tensor, under its peft name
        plain = name.replace(".base_layer.", ".")
        if plain in before:
            assert torch.equal(value, before[plain]), name
    moved = [n for n, p in model.named_parameters() if ".lora_B." in n and p.abs().max() > 0]
    assert moved  # B left zero: the adapters did train


def test_dora_trains_its_magnitude_and_merges(tmp_path):
    model = tiny("6")
    fit(model, train_config(PeftConfig(method="dora", r=4, alpha=8)), tmp_path)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_magnitude_vector" in n for n in trained)
    unmerged = logits(model)
    torch.testing.assert_close(logits(merge_adapters(model)), unmerged, rtol=0, atol=1e-5)


def test_kept_modules_train_fully_beside_the_adapters(tmp_path):
    model = tiny("5")
    head_before = model.head.weight.detach().clone()
    fit(model, train_config(PeftConfig(r=4, modules_to_save=["head"])), tmp_path)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "head.weight" in trained and not any(n.startswith("emb.") for n in trained)
    assert not torch.equal(model.head.weight, head_before)


@pytest.mark.parametrize("method", ["lora", "pissa", "dora"])
def test_adapter_save_load_round_trip(tmp_path, method):
    model = inject_adapters(tiny("6"), PeftConfig(method=method, r=4, alpha=8, modules_to_save=["head"]))
    perturb_adapters_(model)
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    expected = logits(model)
    save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["modules_to_save"] == ["head"]
    assert config["r"] == (8 if method == "pissa" else 4)  # PiSSA saved as a LoRA of the original weights
    loaded = load_adapter(tiny("6"), tmp_path / "adapter")  # the ORIGINAL base, as a user has it
    torch.testing.assert_close(logits(loaded), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits(merge_adapters(loaded)), expected, rtol=0, atol=1e-5)


def test_a_long_target_list_is_saved_by_name_and_suffixes_load_too(tmp_path):
    """peft shortens 20+ target names to suffixes in place; the folder keeps the names, and a
    folder whose config lists suffixes (as peft may write it) loads the same."""
    model = inject_adapters(tiny("6", n_layer=3), PeftConfig(r=4))  # 24 targets
    perturb_adapters_(model)
    expected = logits(model)
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    assert len(config["target_modules"]) == 24 and "blocks.2.ffn.value" in config["target_modules"]
    torch.testing.assert_close(logits(load_adapter(tiny("6", n_layer=3), tmp_path / "a")), expected, rtol=0, atol=1e-5)
    config["target_modules"] = sorted({name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]
                                       for name in config["target_modules"]})  # "att.key", ...
    (tmp_path / "a" / CONFIG_NAME).write_text(json.dumps(config))
    torch.testing.assert_close(logits(load_adapter(tiny("6", n_layer=3), tmp_path / "a")), expected, rtol=0, atol=1e-5)


def test_peft_itself_reads_our_adapter_folder(tmp_path):
    """PeftModel.from_pretrained on the base model gives our logits (peft's own format)."""
    from peft import PeftModel

    model = inject_adapters(tiny("6"), PeftConfig(method="dora", r=4, alpha=8, modules_to_save=["head"]))
    perturb_adapters_(model)
    with torch.no_grad():
        model.head.weight.mul_(0.5)
    expected = logits(model)
    save_adapter(model, tmp_path / "adapter")
    theirs = PeftModel.from_pretrained(tiny("6"), str(tmp_path / "adapter"))
    with torch.no_grad():
        got = theirs(tokens())[0].float()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_pattern_that_matches_nothing_names_the_key():
    with pytest.raises(UserError, match=r"train\.peft\.target_modules pattern '\*\.att\.nope' matches no module"):
        inject_adapters(tiny("6"), PeftConfig(target_modules=["*.att.key", "*.att.nope"]))
    with pytest.raises(UserError, match=r"train\.peft\.modules_to_save pattern 'proj'"):
        inject_adapters(tiny("6"), PeftConfig(modules_to_save=["proj"]))
    with pytest.raises(UserError, match=r"output head 'head'.*modules_to_save"):
        inject_adapters(tiny("6"), PeftConfig(target_modules=["head"]))
    with pytest.raises(UserError, match=r"both kept fully trainable and adapted"):
        inject_adapters(tiny("6"), PeftConfig(target_modules=["blocks.0.*"], modules_to_save=["blocks.0"]))


def test_peft_with_train_only_is_refused():
    cfg = train_config(PeftConfig(), train_only=["head.*"])
    with pytest.raises(UserError, match=r"train\.peft.*train_only=\['head\.\*'\].*modules_to_save"):
        train_config_with_adapters(tiny("6"), cfg)


@pytest.mark.parametrize("override, key", [
    ("train.peft.method=qlora", r"train\.peft\.method='qlora'"),
    ("train.peft.r=0", r"train\.peft\.r=0"),
    ("train.peft.alpha=-1", r"train\.peft\.alpha=-1"),
    ("train.peft.dropout=1.5", r"train\.peft\.dropout=1\.5"),
    ("train.peft.target_modules=[]", r"train\.peft\.target_modules=\[\]"),
    ("train.peft.rank=4", r"unknown key 'train\.peft\.rank'"),
    ("train.peft.pissa_niter=4", r"train\.peft\.pissa_niter=4: expected 0 unless method is pissa"),
])
def test_bad_peft_config_names_the_dotted_key_and_the_recipe(override, key):
    with pytest.raises(RecipeError, match=key):
        load_recipe("music/abc_tiny_lora", [override])
    with pytest.raises(RecipeError, match=r"state_tuning.*either state_tuning or peft"):
        load_recipe("music/abc_tiny_lora", ["train.state_tuning=true"])


def test_the_shipped_lora_recipes_load():
    music = load_recipe("music/abc_tiny_lora").config
    assert music.train.peft.method == "lora" and music.train.peft.r == 8 and music.backbone is None
    tiny_visual = load_recipe("visual/stage2_tiny_lora").config
    assert tiny_visual.train.peft.modules_to_save == ["proj"] and tiny_visual.stage == 2
    paper = load_recipe("visual/stage2_lora_finch_1b6").config
    p = paper.train.peft
    assert (p.r, p.alpha, paper.train.lr, p.modules_to_save) == (128, 256, 2e-4, ["proj"])
    full = load_recipe("visual/stage2_finch_1b6").config
    assert (paper.backbone, paper.data, paper.train.batch_size) == (full.backbone, full.data, full.train.batch_size)
