"""Segment training in the runs: VisualRWKV's loss in segments equals the whole pass (a boundary
anywhere, the reversed image span kept whole), the Trainer with `train.segment_len` equals the
Trainer without on a tiny music run, `data.max_len`, resumes and the config errors (GoldFinch,
losses that cannot run in segments)."""

from __future__ import annotations

import pytest
import torch

from rwkv_mm.backbone import RWKVConfig
from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.errors import ConfigError, UserError
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.run_dir import config_changes
from rwkv_mm.training.trainer import Trainer
from rwkv_mm.vision.conversation import IMAGE_TOKEN_ID
from rwkv_mm.vision.model import VisualRWKV, vlm_loss, vlm_segment_bounds
from rwkv_mm.vision.projector import build_projector
from rwkv_mm.vision.tower import build_vision_tower
from rwkv_test_utils import tiny_model
from training.test_segments import assert_same, lm_model, segmented_pass, whole_pass

P = 5  # the tiny tower's image tokens (4 patches + CLS)


def visual_batch(seed: int) -> dict:
    """Two rows: the image after 3 and after 9 prompt tokens, answers after it, row 0 padded."""
    g = torch.Generator().manual_seed(seed)
    T = 26
    ids = torch.randint(1, 500, (2, T), generator=g)
    targets = torch.randint(1, 500, (2, T), generator=g)
    for row, first in ((0, 3), (1, 9)):
        ids[row, first:first + P] = IMAGE_TOKEN_ID
        targets[row, :first + P] = IGNORE_INDEX  # the prompt and the image have no target
    ids[0, T - 4:] = 0
    targets[0, T - 5:] = IGNORE_INDEX
    return {"input_ids": ids, "targets": targets, "images": torch.randn(2, 3, 32, 32, generator=g)}


def visual_model(version: str, reverse: bool) -> VisualRWKV:
    """A tiny VisualRWKV (World vocabulary, D = 32, the 32-px tower) of any LM family."""
    from vision.vision_test_utils import tiny_visual_model, tiny_vision_config

    if version != "7":
        return tiny_visual_model(version, reverse=reverse).train()
    vision = tiny_vision_config()
    tower = build_vision_tower(vision)
    torch.manual_seed(1)
    proj = build_projector(vision.projector, tower.hidden_size, 32)
    with torch.no_grad():
        for p in proj.parameters():
            p.normal_(0, 0.5)
    return VisualRWKV(lm_model("7", n_layer=2, n_embd=32, vocab_size=65536), tower, proj, reverse).train()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reversed"])
@pytest.mark.parametrize("version", ["6", "7"])
@pytest.mark.parametrize("S", [4, 7])
def test_visual_loss_in_segments_equals_the_whole_pass(version, reverse, S):
    model = visual_model(version, reverse)
    for p in model.rwkv.emb.parameters():  # stage 2: the embedding and the tower are frozen
        p.requires_grad_(False)
    batch = visual_batch(S)
    bounds = vlm_segment_bounds(model, batch, S)
    assert bounds[0] == 0 and bounds[-1] == 26 and bounds == sorted(set(bounds))
    if reverse:  # no boundary inside an image span; the spans are longer than S, so some moved
        assert not any(f < b <= f + P - 1 for b in bounds for f in (3, 9))
        assert bounds != list(range(0, 26, S)) + [26]
    else:
        assert bounds == list(range(0, 26, S)) + [26]
    whole = whole_pass(model, vlm_loss, batch, 4, 0)
    segmented = segmented_pass(model, vlm_loss, batch, 4, 0, S)
    assert any(n.startswith("proj.") for n in whole[1]) and any(n.startswith("rwkv.blocks.") for n in whole[1])
    assert_same(whole, segmented)


def test_a_visual_segment_that_cuts_a_reversed_span_is_refused():
    model = visual_model("6", reverse=True)
    batch = visual_batch(0)
    with pytest.raises(ValueError, match="cut a reversed image span"):
        model(batch["input_ids"], images=batch["images"], span=(0, 5))


# ----------------------------------------------------------------------------- the trainer

def music_data(ctx_len: int):
    from rwkv_mm.music.corpus import TuneDataset, collate_tunes, load_tunes
    from rwkv_mm.shipped import resolve_shipped

    tunes, _ = load_tunes(resolve_shipped("pkg:data/music/train.json"))
    return TuneDataset(tunes[:24], ctx_len), collate_tunes


def train_three_steps(tmp_path, segment_len: int, version: str = "6", **overrides):
    dataset, collate = music_data(200)
    model = tiny_model(version, n_layer=2, n_embd=64, head_size=16, vocab_size=128).train()
    cfg = TrainConfig(max_steps=3, batch_size=4, micro_batch_size=2, lr=3e-3, warmup_steps=1, eval_every=0,
                      save_every=0, loggers=["jsonl"], loss_chunk=50, segment_len=segment_len, **overrides)
    trainer = Trainer(model, cfg, tmp_path / f"run{segment_len}", dataset, collate, device="cpu")
    records = [trainer.train_step() for _ in range(3)]
    trainer.close()
    return records, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("grad_cp", [False, True], ids=["plain", "grad_cp"])
def test_trainer_with_segments_equals_the_trainer_without(tmp_path, grad_cp):
    """Three optimizer steps (2 micro-batches each, samples of different lengths padded, L2Wrap,
    the chunked head): the same losses, gradient norms and weights."""
    whole, weights_w = train_three_steps(tmp_path, 0, grad_cp=grad_cp)
    segmented, weights_s = train_three_steps(tmp_path, 48, grad_cp=grad_cp)
    for a, b in zip(whole, segmented):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for name, w in weights_w.items():  # Adam turns summation-order noise of near-zero gradients
        # into steps of up to ~lr/100 (lr 3e-3): the same between grad_cp on and off
        torch.testing.assert_close(weights_s[name], w, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("tuning", ["state", "lora"])
def test_segments_compose_with_state_tuning_and_lora(tmp_path, tuning):
    """State tuning (the first segment starts from the learned state, which trains through every
    later segment) and LoRA adapters: with segments as without."""
    from rwkv_mm.training.peft_config import PeftConfig

    tune = dict(state_tuning=True, state_tuning_shift=True) if tuning == "state" else dict(peft=PeftConfig(r=4, alpha=8))
    whole, weights_w = train_three_steps(tmp_path, 0, **tune)
    segmented, weights_s = train_three_steps(tmp_path, 48, **tune)
    assert [a["loss"] for a in whole] == pytest.approx([b["loss"] for b in segmented], rel=1e-5)
    assert [a["grad_norm"] for a in whole] == pytest.approx([b["grad_norm"] for b in segmented], rel=1e-4)
    assert any(("time_state" if tuning == "state" else "lora_") in name for name in weights_w)
    for name, w in weights_w.items():
        torch.testing.assert_close(weights_s[name], w, rtol=1e-4, atol=1e-4, msg=name)


def test_goldfinch_refuses_segments(tmp_path):
    dataset, collate = music_data(64)
    model = tiny_model("goldfinch", n_layer=3, n_embd=64, head_size=16, vocab_size=128)
    with pytest.raises(UserError, match="train.segment_len") as err:
        Trainer(model, TrainConfig(segment_len=32, loggers=["jsonl"]), tmp_path, dataset, collate, device="cpu")
    assert "goldfinch" in str(err.value) and "GOLD" in str(err.value)


def test_a_loss_without_segments_refuses_them(tmp_path):
    dataset, collate = music_data(64)

    def whole_clip_loss(model, batch):  # e.g. a bidirectional encoder's: no `segmented`
        raise AssertionError("not called")

    with pytest.raises(UserError, match="train.segment_len=16.*whole_clip_loss"):
        Trainer(tiny_model("6", n_layer=1, n_embd=64, head_size=16, vocab_size=128),
                TrainConfig(segment_len=16, loggers=["jsonl"]), tmp_path, dataset, collate,
                loss_fn=whole_clip_loss, device="cpu")


def test_audio_tagging_refuses_segments(tmp_path):
    from robustness.cli_utils import assert_user_error, run_cli

    result = run_cli("train", "audio/synth_tiny", "train.segment_len=64", "data.synthetic.n_train=8",
                     "data.synthetic.n_eval=4", "train.max_steps=1", "--run-dir", "run", cwd=tmp_path)
    assert_user_error(result, "train.segment_len=64", "TaggingLoss")


# ----------------------------------------------------------------------------- data and resumes

def test_max_len_bounds_samples_only_with_segments(tmp_path):
    from rwkv_mm.runners.lm_music import MusicDataConfig, MusicRunConfig, MusicStage
    from rwkv_mm.runners.visual_rwkv import VisualDataConfig, VisualRunConfig

    with pytest.raises(ConfigError, match="data.max_len=512"):
        MusicRunConfig(data=MusicDataConfig(ctx_len=64, max_len=512))
    with pytest.raises(ConfigError, match="data.max_len=512"):
        VisualRunConfig(data=VisualDataConfig(max_len=512))
    with pytest.raises(ConfigError, match="max_len"):
        MusicDataConfig(max_len=-1)
    cfg = MusicRunConfig(backbone=RWKVConfig(n_layer=1, n_embd=64, head_size=16, vocab_size=128),
                         data=MusicDataConfig(ctx_len=64, max_len=300, max_train_tunes=8, max_validation_tunes=4),
                         train=TrainConfig(segment_len=32, loggers=["jsonl"], micro_batch_size=2, batch_size=2))
    trainer = MusicStage(cfg, tmp_path).setup()
    assert trainer.train_set.ctx_len == 300 and trainer.eval_set.ctx_len == 300
    assert max(len(s) for s in trainer.train_set.samples) > 65  # longer than ctx_len: not cut there
    for max_len in (None, 0):  # unset: ctx_len, with or without segments
        cfg.data.max_len = max_len
        assert MusicStage(cfg, tmp_path).setup().train_set.ctx_len == 64


def test_a_resume_may_change_segment_len():
    saved = {"train": {"segment_len": 0, "lr": 1e-3}, "data": {"max_len": None}}
    assert config_changes(saved, {"train": {"segment_len": 1024, "lr": 1e-3}, "data": {"max_len": None}}) == ([], [])
    changed, _ = config_changes(saved, {"train": {"segment_len": 1024, "lr": 1e-3}, "data": {"max_len": 4096}})
    assert changed == ["data.max_len"]  # the samples change: not free
