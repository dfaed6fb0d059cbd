"""train.peft in the other runners: VisualRWKV stage 2 (adapters on the LM, the projector kept
fully trainable) with `chat`/`eval --adapter`, and the audio tagger."""

from __future__ import annotations

import json

import pytest
import torch

from robustness.cli_utils import assert_user_error, run_cli
from rwkv_mm.backbone import read_state_dict
from rwkv_mm.recipe import load_recipe
from rwkv_mm.runners import get_runner
from vision.test_stages import TINY  # the stage tests' tiny overrides (2 steps)


@pytest.fixture(scope="module")
def visual(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peft_visual")
    data = tmp / "synth"
    common = TINY + [f"data.synthetic_root={data}", f"data.image_root={data}"]
    from rwkv_mm.vision.synth import build_synthetic_visual
    build_synthetic_visual(data, n_train=16, n_eval=2)
    r1 = load_recipe("visual/stage1_tiny", common + [f"data.data_path={data}/stage1_captions.json"])
    get_runner(r1.runner).fn(r1.config, tmp / "s1", False)
    r2 = load_recipe("visual/stage2_tiny_lora", common + [f"init_from={tmp}/s1/model", "train.lr=3e-2",
                                                           f"data.data_path={data}/stage2_qa.json",
                                                           "eval.gqa_questions=", "eval.pope_questions="])
    s2 = get_runner(r2.runner).fn(r2.config, tmp / "s2", False)
    return tmp, data, s2


def test_stage2_lora_trains_adapters_and_the_projector_only(visual):
    tmp, _, s2 = visual
    before = read_state_dict(tmp / "s1" / "model" / "backbone.pth")
    trained = torch.load(tmp / "s2" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, value in before.items():  # the LM's base weights, under their peft names
        name = f"rwkv.{key}"
        name = name if name in trained else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(trained[name], value), key
    adapters = {k: v for k, v in trained.items() if ".lora_" in k}
    proj = trained["proj.weight"]
    assert s2["trainable_params"] == sum(v.numel() for v in adapters.values()) + proj.numel()
    assert not torch.equal(proj, read_state_dict(tmp / "s1" / "model" / "projector.pth")["weight"])
    saved = read_state_dict(tmp / "s2" / "adapter" / "adapter_model.safetensors")
    assert torch.equal(saved["base_model.model.proj.weight"], proj)
    assert json.loads((tmp / "s2" / "adapter" / "adapter_config.json").read_text())["modules_to_save"] == ["proj"]
    after = read_state_dict(tmp / "s2" / "model" / "backbone.pth")  # merged, plain names
    assert set(after) == set(before) and torch.equal(after["emb.weight"], before["emb.weight"])
    assert not torch.equal(after["blocks.0.att.key.weight"], before["blocks.0.att.key.weight"])


def test_chat_and_eval_with_the_adapter_equal_the_merged_model(visual):
    tmp, data, _ = visual
    image = sorted((data / "images").glob("eval_*.png"))[0]
    ask = ("--image", image, "--prompt", "What is in the image?", "--max-tokens", "8", "--temperature", "0")
    with_adapter = run_cli("chat", "--checkpoint", tmp / "s1" / "model", "--adapter", tmp / "s2" / "adapter", *ask)
    merged = run_cli("chat", "--checkpoint", tmp / "s2" / "model", *ask)
    assert with_adapter.rc == merged.rc == 0, with_adapter.err
    assert with_adapter.out == merged.out
    gqa = ("--images", data / "images", "--questions", data / "eval" / "llava_gqa_testdev_balanced_questions.jsonl",
           "--max-new-tokens", "4", "--limit", "2")
    answers = tmp / "gqa_adapter.jsonl"
    ours = run_cli("eval", "gqa", "--checkpoint", tmp / "s1" / "model", "--adapter", tmp / "s2" / "adapter", *gqa,
                   "--answers", answers)
    plain = run_cli("eval", "gqa", "--checkpoint", tmp / "s2" / "model", *gqa, "--answers", tmp / "gqa_merged.jsonl")
    assert ours.rc == plain.rc == 0, ours.err
    rows = lambda p: [(r["question_id"], r["text"]) for r in map(json.loads, p.read_text().splitlines()[1:])]  # noqa: E731
    assert rows(answers) == rows(tmp / "gqa_merged.jsonl")
    # the answers file records the adapter: the base alone may not add to it
    assert_user_error(run_cli("eval", "gqa", "--checkpoint", tmp / "s1" / "model", *gqa, "--answers", answers),
                      "adapter_sha256", str(answers))


def test_stage1_refuses_peft(visual):
    tmp, data, _ = visual
    recipe = load_recipe("visual/stage1_tiny", TINY + [f"data.synthetic_root={data}", f"data.image_root={data}",
                                                       f"data.data_path={data}/stage1_captions.json",
                                                       "train.peft.r=4"])
    with pytest.raises(ValueError, match=r"train\.peft.*only the projector"):
        get_runner(recipe.runner).fn(recipe.config, tmp / "s1_peft", False)


def test_audio_tagger_trains_with_adapters_and_a_kept_head(tmp_path):
    from audio.test_runner import fast
    from rwkv_mm.audio.checkpoint import load_tagger

    run_dir = tmp_path / "run"
    result = run_cli("train", "audio/synth_tiny", *fast(tmp_path), "train.peft.r=4",
                     "train.peft.modules_to_save=[head, patch_embed]", "--run-dir", run_dir)
    assert result.rc == 0, result.err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["adapter"] == str(run_dir / "adapter") and 0.0 <= summary["mAP"] <= 1.0
    model, *_ = load_tagger(run_dir / "model.pt")  # plain (merged) weights, as without peft
    assert not any(".lora_" in k or ".base_layer." in k for k in model.state_dict())
    for snapshot in (run_dir / "checkpoints").glob("step_*.pt"):
        assert not any(".lora_" in k for k in torch.load(snapshot, weights_only=True)["model"]), snapshot
