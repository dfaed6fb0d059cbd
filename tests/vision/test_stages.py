"""The two VisualRWKV stages through the real runner: what each one may update."""

import pytest
import torch

from rwkv_mm.backbone import read_state_dict
from rwkv_mm.recipe import load_recipe
from rwkv_mm.runners import get_runner
from rwkv_mm.runners.visual_rwkv import stage_train_config
from rwkv_mm.vision.tower import build_vision_tower

TINY = ["backbone.version=5", "backbone.n_layer=2", "backbone.n_embd=32", "backbone.head_size=16",
        "vision.custom.image_size=32", "vision.custom.width=32", "vision.custom.layers=1",
        "vision.custom.head_width=16", "data.max_samples=16", "data.ctx_len=96",
        "train.max_steps=2", "train.batch_size=4", "train.warmup_steps=0", "train.save_every=2",
        "train.log_every=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    data = tmp / "synth"
    common = TINY + [f"data.synthetic_root={data}", f"data.data_path={data}/stage1_captions.json",
                     f"data.image_root={data}"]
    from rwkv_mm.vision.synth import build_synthetic_visual
    build_synthetic_visual(data, n_train=16, n_eval=2)
    r1 = load_recipe("visual/stage1_tiny", common)
    s1 = get_runner(r1.runner).fn(r1.config, tmp / "s1", False)
    r2 = load_recipe("visual/stage2_tiny", common + [f"init_from={tmp}/s1/model",
                                                      f"data.data_path={data}/stage2_qa.json",
                                                      "eval.gqa_questions=", "eval.pope_questions="])
    s2 = get_runner(r2.runner).fn(r2.config, tmp / "s2", False)
    return tmp, r1.config, s1, s2


def _fresh_backbone(tmp, cfg):
    from rwkv_mm.runners.visual_rwkv import build_visual_model
    return build_visual_model(cfg)


def test_stage1_updates_only_the_projector(runs):
    tmp, cfg1, s1, _ = runs
    start = _fresh_backbone(tmp, cfg1)  # same seed: the model stage 1 started from
    trained = torch.load(tmp / "s1" / "checkpoints" / "last.pt", weights_only=True)["model"]
    changed = {k for k, v in start.state_dict().items() if not torch.equal(v, trained[k])}
    assert changed == {"proj.weight"}
    assert s1["trainable_params"] == start.proj.weight.numel()


def test_stage2_never_touches_clip_or_the_embedding(runs):
    tmp, cfg1, _, s2 = runs
    before = read_state_dict(tmp / "s1" / "model" / "backbone.pth")
    after = read_state_dict(tmp / "s2" / "model" / "backbone.pth")
    assert torch.equal(before["emb.weight"], after["emb.weight"])
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "head.weight" in changed and any(k.startswith("blocks.") for k in changed)
    p1 = read_state_dict(tmp / "s1" / "model" / "projector.pth")
    p2 = read_state_dict(tmp / "s2" / "model" / "projector.pth")
    assert not torch.equal(p1["weight"], p2["weight"])
    trained = torch.load(tmp / "s2" / "checkpoints" / "last.pt", weights_only=True)["model"]
    tower = build_vision_tower(cfg1.vision)
    for k, v in tower.state_dict().items():
        assert torch.equal(trained[f"vit.{k}"], v), k


def test_stage_rules_cannot_be_overridden():
    r = load_recipe("visual/stage1_tiny", ["train.train_only=[rwkv.head.*]"])
    with pytest.raises(ValueError, match="only the projector"):
        stage_train_config(r.config)
    r = load_recipe("visual/stage2_tiny", ["train.freeze=[rwkv.blocks.0.*]"])
    assert stage_train_config(r.config).freeze == ["rwkv.blocks.0.*", "vit.*", "rwkv.emb.*"]
