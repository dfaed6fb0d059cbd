"""VisualRWKV with the Goose (RWKV-7) language model (`backbone.version: "7"`): both training
stages through the real runner with VisualRWKV-6's image-span reversal in odd layers, the saved
model folder, and cached-state answering equal to one question at a time. No vision code knows
the family: it comes through `build_backbone`, `layer_order` and `RWKVState`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from rwkv_mm.backbone import Goose, RWKVState, read_state_dict
from rwkv_mm.recipe import load_recipe
from rwkv_mm.runners import get_runner
from rwkv_mm.runners.visual_rwkv import build_visual_model
from rwkv_mm.vision.checkpoint import load_visual_rwkv
from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID
from rwkv_mm.vision.model import VisualRWKV
from rwkv_mm.vision.projector import build_projector
from rwkv_mm.vision.tower import build_vision_tower
from test_answer import _answerer, _greedy_reference, _images, _questions
from vision_test_utils import tiny_vision_config


def _goose_test_utils():
    """tests/backbone/test_goose_utils.py (the Goose tests' helpers), imported by path."""
    if "test_goose_utils" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "backbone" / "test_goose_utils.py"
        spec = importlib.util.spec_from_file_location("test_goose_utils", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["test_goose_utils"] = module
    return sys.modules["test_goose_utils"]


tiny_goose = _goose_test_utils().tiny_goose

TINY = ["backbone.version=7", "backbone.n_layer=3", "backbone.n_embd=32", "backbone.head_size=16",
        "model.reverse_image_odd_layers=true",
        "vision.custom.image_size=32", "vision.custom.width=32", "vision.custom.layers=1",
        "vision.custom.head_width=16", "data.max_samples=16", "data.ctx_len=96",
        "train.max_steps=2", "train.batch_size=4", "train.warmup_steps=0", "train.save_every=2",
        "train.log_every=1", "train.lr=1e-3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 then stage 2 of a tiny Goose VisualRWKV with reversed odd layers."""
    tmp = tmp_path_factory.mktemp("goose_stages")
    data = tmp / "synth"
    from rwkv_mm.vision.synth import build_synthetic_visual
    build_synthetic_visual(data, n_train=16, n_eval=2)
    common = TINY + [f"data.synthetic_root={data}", f"data.image_root={data}"]
    r1 = load_recipe("visual/stage1_tiny", common + [f"data.data_path={data}/stage1_captions.json"])
    s1 = get_runner(r1.runner).fn(r1.config, tmp / "s1", False)
    r2 = load_recipe("visual/stage2_tiny", common + [f"init_from={tmp}/s1/model",
                                                      f"data.data_path={data}/stage2_qa.json",
                                                      "eval.gqa_questions=", "eval.pope_questions="])
    s2 = get_runner(r2.runner).fn(r2.config, tmp / "s2", False)
    return tmp, r1.config, r2.config, s1, s2


def test_stage2_trains_the_goose_layers_but_not_the_embedding(runs):
    tmp, cfg1, _, _, s2 = runs
    assert isinstance(build_visual_model(cfg1).rwkv, Goose)
    before = read_state_dict(tmp / "s1" / "model" / "backbone.pth")
    after = read_state_dict(tmp / "s2" / "model" / "backbone.pth")
    assert "blocks.1.att.r_k" in after and "blocks.0.att.v1" not in after  # the x070 layout
    assert torch.equal(before["emb.weight"], after["emb.weight"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"head.weight", "blocks.2.att.w0", "blocks.2.att.v0", "blocks.0.att.a1"} <= changed
    assert s2["steps"] == 2


def test_saved_folder_reloads_with_identical_logits_and_cached_state(runs):
    tmp, _, cfg2, _, _ = runs
    trained = build_visual_model(cfg2)
    trained.load_state_dict(torch.load(tmp / "s2" / "checkpoints" / "last.pt", weights_only=True)["model"])
    trained.eval()
    loaded, _ = load_visual_rwkv(tmp / "s2" / "model")
    assert isinstance(loaded.rwkv, Goose) and loaded.reverse_image_odd_layers
    P = loaded.num_image_tokens
    ids = torch.tensor([[11, 12] + [IMAGE_TOKEN_ID] * P + [40, 41, 42, 43]])
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want, _ = trained(ids, images=pixels)
        got, _ = loaded(ids, images=pixels)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        split = 2 + P  # the image prefix once (reversed in odd layers), then the text
        _, state = loaded(ids[:, :split], images=pixels, last_only=True)
        assert isinstance(state, RWKVState)
        step, _ = loaded(ids[:, split:], state=state.clone())
    torch.testing.assert_close(step[:, -1], want[:, -1], rtol=1e-5, atol=1e-5)


def tiny_goose_visual(reverse: bool, seed: int = 5) -> VisualRWKV:
    """A randomly weighted Goose VisualRWKV: World vocabulary, D = 32, the 32-px custom tower."""
    vision = tiny_vision_config()
    rwkv = tiny_goose(n_layer=3, n_embd=32, head_size=16, vocab_size=65536, seed=seed)
    tower = build_vision_tower(vision)
    torch.manual_seed(seed)
    proj = build_projector(vision.projector, tower.hidden_size, 32)
    with torch.no_grad():
        for p in proj.parameters():
            p.normal_(0, 0.5)
    return VisualRWKV(rwkv, tower, proj, reverse).eval()


@pytest.mark.parametrize("position, reverse", [("first", True), ("middle", False)])
def test_cached_and_batched_answers_equal_one_at_a_time(tmp_path, position, reverse):
    model = tiny_goose_visual(reverse)
    qs = _questions(_images(tmp_path, 2))
    cached = _answerer(model, image_position=position)
    reference = [_greedy_reference(model, cached, q) for q in qs]
    assert cached.answer(qs) == reference
    assert cached.stats["prefix_computed"] == (2 if position == "first" else 8)
    assert len(set(reference)) > 1


def test_chat_reply_equals_greedy_answer_and_keeps_state(tmp_path):
    from PIL import Image

    from rwkv_mm.backbone import SamplingConfig
    from rwkv_mm.vision.answer import Question, VisualAnswerer
    from rwkv_mm.vision.chat import ImageChat
    from rwkv_mm.vision.conversation import ChatTemplate
    from rwkv_mm.vision.preprocess import ImageProcessor
    from test_chat import TOK

    model = tiny_goose_visual(reverse=True, seed=4)
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    proc = ImageProcessor(32)
    greedy = VisualAnswerer(model, TOK, proc, max_new_tokens=5).answer([Question("q", img, "What?")])[0]
    chat = ImageChat(model, TOK, ChatTemplate(), "first", proc, img, SamplingConfig(temperature=0.0),
                     max_tokens=5)
    assert "".join(chat.reply("What?")).strip() == greedy
    first = chat.state.clone()
    "".join(chat.reply("And then?"))
    assert isinstance(chat.state, RWKVState) and not torch.equal(chat.state.wkv[0], first.wkv[0])
