"""`rwkv-mm plan` on every shipped paper recipe, without any weights or data: the model is built
on the meta device from the recipe's backbone section; what the plan says is sane."""

from __future__ import annotations

import pytest

from robustness.cli_utils import assert_user_error, run_cli
from rwkv_mm.planning import estimate
from rwkv_mm.recipe import load_recipe

PAPER_RECIPES = ["audio/audioset_t", "audio/audioset_s", "music/abc_eagle_l24_d512",
                 "visual/stage1_eagle_1b5", "visual/stage1_eagle_3b", "visual/stage1_finch_1b6",
                 "visual/stage2_eagle_1b5", "visual/stage2_eagle_3b", "visual/stage2_finch_1b6"]


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_every_paper_recipe_plans_without_weights(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no weights, data or stage-1 folders here
    plan = estimate(load_recipe(name), gpus=8, gpu_mem_gb=80)
    assert plan.params.total >= plan.params.trainable > 0
    for s in plan.scenarios:
        assert s.total == s.states.total + s.activations.at(s.micro_batch)
        fits = lambda b: s.states.total + s.activations.at(b) <= plan.budget  # noqa: E731
        assert not fits(s.max_micro_batch + 1) and (s.max_micro_batch == 0 or fits(s.max_micro_batch))
        assert s.fits == fits(s.micro_batch)
    plain, cp = plan.scenario("ddp", False), plan.scenario("ddp", True)
    assert cp.activations.at(plan.micro_batch) < plain.activations.at(plan.micro_batch)
    assert plan.scenario("fsdp", False).states.total < plain.states.total
    assert plan.flops_per_sequence > 0 and plan.seconds() > 0
    if name.startswith("visual/stage1"):  # stage 1 trains only the projector
        assert plan.params.trainable < 0.01 * plan.params.total


def test_cli_prints_the_table_for_stage2_finch(tmp_path):
    result = run_cli("plan", "visual/stage2_finch_1b6", "--gpus", "8", "--gpu-mem", "80", cwd=tmp_path)
    assert result.rc == 0, result.err
    for text in ("memory per device (GB)", "ddp + grad_cp", "fsdp + grad_cp", "largest micro-batch",
                 "FLOPs per token", "Finch:", "CLIP tower", "40% MFU"):
        assert text in result.out
    assert "WARNING" not in result.err  # open_clip's "no pretrained weights" is silenced


def test_backbone_null_without_its_weights_names_the_keys(tmp_path):
    result = run_cli("plan", "visual/stage2_tiny", cwd=tmp_path)  # init_from is a stage-1 folder not there
    assert_user_error(result, "backbone", "init_from=runs/visual/stage1_tiny/model", "backbone.n_layer")


def test_overrides_and_cpu_plan(tmp_path):
    result = run_cli("plan", "music/abc_tiny", "train.grad_cp=true", "data.ctx_len=512", "--device", "cpu",
                     cwd=tmp_path)
    assert result.rc == 0, result.err
    assert "fp32" in result.out and "chunked PyTorch form" in result.out and "of 512 positions" in result.out


def test_goose_plans_too(tmp_path, monkeypatch):
    """RWKV-7: its chunked WKV's data-dependent branch takes the usual case on the meta device."""
    monkeypatch.chdir(tmp_path)
    plan = estimate(load_recipe("music/abc_tiny", ["backbone.version=7"]), device="cpu")
    assert plan.formula.startswith("Goose") and plan.flops_by_kind["wkv"] > 0
    assert len([c for calls in plan.trace.wkv_calls.values() for c in calls]) == plan.plan.backbone.n_layer
