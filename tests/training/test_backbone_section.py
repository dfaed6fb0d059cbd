"""The `backbone:` section of every recipe (issue 14 item 1): RWKVConfig itself, every field
reachable, one set of defaults (also `rwkv-mm init`'s), the weights beside it checked against it,
`backbone: null` taking the shape of the weights, and the saved files that carry it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rwkv_mm.backbone import RWKVConfig, build_backbone, save_model
from rwkv_mm.errors import UserError
from rwkv_mm.recipe import RecipeError, list_recipes, load_recipe, resolved_tree
from rwkv_mm.training.backbone_section import backbone_from, check_backbone

FIELDS = [f.name for f in dataclasses.fields(RWKVConfig)]
TINY = dict(version="5", n_layer=1, n_embd=32, head_size=16, vocab_size=128)


def test_every_shipped_recipe_has_the_backbone_section_with_every_field():
    for name, _, _ in list_recipes():
        recipe = load_recipe(name)
        backbone = recipe.config.backbone
        assert backbone is None or isinstance(backbone, RWKVConfig), name
        if backbone is not None:
            assert list(resolved_tree(recipe)["backbone"]) == FIELDS, name  # the resolved config.yaml


@pytest.mark.parametrize("name", ["music/abc_tiny", "visual/stage1_tiny", "audio/synth_tiny"])
def test_every_rwkv_config_field_is_reachable_from_a_recipe(name):
    cfg = load_recipe(name, ["backbone.dim_ffn=256", "backbone.layer_norm_eps=1e-6",
                             "backbone.head_size_divisor=4", "backbone.gate=true",
                             "backbone.tm_lora_rank=8", "backbone.decay_lora_rank=8"]).config
    assert (cfg.backbone.dim_ffn, cfg.backbone.layer_norm_eps, cfg.backbone.head_size_divisor) == (256, 1e-6, 4)
    gold = load_recipe(name, ["backbone.version=goldfinch", "backbone.gate=false", "backbone.n_gold_layer=1",
                              "backbone.key_cache_dim=8", "backbone.gold_lora_rank=8",
                              "backbone.rope_base=10000"]).config.backbone
    assert (gold.n_gold_layer, gold.key_cache_dim, gold.gold_lora_rank, gold.rope_base) == (1, 8, 8, 10000.0)


def test_a_bad_backbone_value_names_the_dotted_key_and_the_recipe():
    with pytest.raises(RecipeError, match=r"abc_tiny\.yaml: backbone\.dim_ffn=0"):
        load_recipe("music/abc_tiny", ["backbone.dim_ffn=0"])
    with pytest.raises(RecipeError, match=r"unknown key 'backbone\.n_layers'; did you mean 'backbone\.n_layer'"):
        load_recipe("visual/stage1_tiny", ["backbone.n_layers=2"])


def test_music_needs_byte_tokens():
    with pytest.raises(RecipeError, match=r"backbone\.vocab_size=65536: expected 128"):
        load_recipe("music/abc_tiny", ["backbone.vocab_size=65536"])


def test_a_null_backbone_needs_weights_to_take_the_shape_from():
    with pytest.raises(RecipeError, match=r"backbone=None: expected a backbone section .*init_from"):
        load_recipe("music/abc_tiny", ["backbone=null"])
    with pytest.raises(RecipeError, match="init_from or backbone_weights"):
        load_recipe("visual/stage2_tiny", ["init_from="])
    with pytest.raises(RecipeError, match=r"backbone_weights=.*empty when init_from is set"):
        load_recipe("visual/stage2_tiny", ["backbone_weights=lm.pth"])


def test_reversal_with_a_goldfinch_backbone_is_refused_when_the_recipe_loads():
    with pytest.raises(RecipeError, match=r"model\.reverse_image_odd_layers=True: .*backbone\.version goldfinch"):
        load_recipe("visual/stage1_tiny", ["backbone.version=goldfinch", "backbone.n_layer=3",
                                           "model.reverse_image_odd_layers=true"])


def test_weights_must_match_the_section_and_null_takes_their_shape(tmp_path):
    torch.manual_seed(0)
    path = save_model(build_backbone(RWKVConfig(**TINY)), tmp_path / "lm.pth")
    model = backbone_from(RWKVConfig(**TINY, layer_norm_eps=1e-6), str(path), seed=0)
    assert model.config.n_layer == 1 and model.config.layer_norm_eps == 1e-6  # runtime settings: the recipe's
    assert backbone_from(None, str(path), seed=0).config == RWKVConfig(**TINY)
    with pytest.raises(UserError, match=r"backbone\.n_layer=2 \(the weights: 1\).*lm\.pth: set backbone\.n_layer=1"):
        backbone_from(RWKVConfig(**{**TINY, "n_layer": 2}), str(path), seed=0)
    with pytest.raises(UserError, match=r"backbone\.version='6' \(the weights: '5'\)"):
        check_backbone(RWKVConfig(**{**TINY, "version": "6"}), RWKVConfig(**TINY), "x")
    check_backbone(RWKVConfig(**{**TINY, "vocab_size": 7}), RWKVConfig(**TINY), "x", ignore=("vocab_size",))


def test_music_init_from_a_file_of_another_shape_names_the_key(tmp_path):
    from rwkv_mm.runners.lm_music import build_model

    path = save_model(build_backbone(RWKVConfig(**TINY)), tmp_path / "lm.pth")
    cfg = load_recipe("music/abc_tiny", [f"init_from={path}"]).config
    with pytest.raises(UserError, match=r"backbone\.n_layer=4 \(the weights: 1\)"):
        build_model(cfg)
    cfg = load_recipe("music/abc_tiny", [f"init_from={path}", "backbone=null"]).config
    assert build_model(cfg).config.n_layer == 1


def test_init_takes_its_defaults_from_rwkv_config():
    from rwkv_mm.cli import build_parser

    args = build_parser().parse_args(["init", "--out", "x.pth"])
    default = RWKVConfig()
    assert (args.version, args.n_layer, args.n_embd, args.vocab_size, args.head_size) == (
        default.version, default.n_layer, default.n_embd, default.vocab_size, default.head_size)

