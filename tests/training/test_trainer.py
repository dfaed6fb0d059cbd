"""The shared trainer: exact resume, accumulation, freezing, schedule, L2Wrap, DDP, outputs."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.l2wrap import l2wrap
from rwkv_mm.training.schedule import lr_at
from rwkv_mm.training.distributed import fsdp_units
from rwkv_mm.training.trainer import Trainer
from rwkv_test_utils import gloo_process_group, single_threaded
from training.toy_run import collate, make_dataset, make_model


def config(**kw) -> TrainConfig:
    base = dict(max_steps=20, batch_size=4, micro_batch_size=2, lr=2e-2, lr_final=1e-3,
                warmup_steps=3, save_every=10, eval_every=0, log_every=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def train(tmp_path, cfg, model=None, resume=False, on_step=None, eval_set=None):
    losses = []

    def record(trainer, metrics):
        losses.append(metrics["loss"])
        if on_step:
            on_step(trainer, metrics)

    trainer = Trainer(model or make_model(), cfg, tmp_path, make_dataset(), collate, eval_set=eval_set,
                      device="cpu")
    trainer.fit(resume=resume, on_step=record)
    return losses, trainer


def test_resume_after_a_kill_continues_exactly(tmp_path):
    straight, t_straight = train(tmp_path / "a", config())

    def kill(trainer, _):
        if trainer.step == 13:
            raise KeyboardInterrupt  # after the checkpoint of step 10

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", config(), on_step=kill)
    resumed, t_resumed = train(tmp_path / "b", config(), model=make_model(seed=99), resume=True)
    assert len(straight) == 20 and len(resumed) == 10
    assert resumed == straight[10:]  # bit-identical on the CPU
    for (name, p), q in zip(t_straight.model.named_parameters(), t_resumed.model.parameters()):
        assert torch.equal(p, q), name
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))  # the steps redone after the kill are not logged twice


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    one, _ = train(tmp_path / "a", config(max_steps=4, micro_batch_size=4))
    accumulated, _ = train(tmp_path / "b", config(max_steps=4, micro_batch_size=1))
    assert one == pytest.approx(accumulated, rel=1e-5)


def test_outputs_loss_decreases_and_evaluation(tmp_path):
    losses, trainer = train(tmp_path, config(max_steps=30, eval_every=10, save_every=15),
                            eval_set=make_dataset(8, seed=5))
    assert losses[-1] < losses[0]
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("val_loss" in r for r in records) == 3
    assert all(math.isfinite(r["tokens_per_s"]) for r in records if "loss" in r)
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_freezing_by_patterns(tmp_path):
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, trainer = train(tmp_path, config(max_steps=2, train_only=["blocks.0.att.*"], freeze=["*.ln_x.*"]),
                       model=model)
    for name, p in model.named_parameters():
        should_train = name.startswith("blocks.0.att.") and ".ln_x." not in name
        assert p.requires_grad == should_train, name
        if not should_train:
            assert torch.equal(p, before[name]), name
    assert not torch.equal(model.blocks[0].att.receptance.weight, before["blocks.0.att.receptance.weight"])
    with pytest.raises(ValueError, match="matches no parameter"):
        Trainer(make_model(), config(freeze=["nonexistent.*"]), tmp_path, make_dataset(), collate)


def test_bad_batch_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="micro_batch_size=2: expected a divisor of batch_size"):
        config(batch_size=5, micro_batch_size=2)


def test_schedule_warmup_then_cosine_to_floor():
    cfg = TrainConfig(lr=1.0, lr_final=0.1, warmup_steps=4, max_steps=14)
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg) == pytest.approx(1.0)
    assert lr_at(13, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    values = [lr_at(s, cfg) for s in range(4, 14)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_l2wrap_gradient_matches_rwkv_lm_formula():
    logits = torch.randn(2, 3, 7, requires_grad=True)
    loss = (logits * 0).sum() + 1.0
    l2wrap(loss, logits, n_positions=6).backward()
    expected = torch.zeros(2, 3, 7)
    top, idx = logits.detach().max(-1, keepdim=True)
    expected.scatter_(-1, idx, top * 1e-4 / 6)
    assert torch.allclose(logits.grad, expected)
    assert l2wrap(torch.tensor(2.5), logits, 6).item() == 2.5


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, strategy: str, version: str) -> None:
    with gloo_process_group(rank, world, init_file):
        losses, trainer = train(__import__("pathlib").Path(out_dir),
                                config(max_steps=4, micro_batch_size=1, save_every=2, strategy=strategy),
                                model=make_model(version=version))
        full = trainer.full_model_state_dict()  # collective under FSDP; whole on rank 0 only
        if rank == 0:
            torch.save({"losses": losses, "head": full["head.weight"].detach()}, f"{out_dir}/result.pt")


@pytest.mark.parametrize("strategy, version", [("ddp", "6"), ("fsdp", "6"), ("fsdp", "goldfinch")])
def test_two_gloo_processes_equal_one_process(tmp_path, strategy, version):
    with single_threaded():
        single, trainer = train(tmp_path / "single", config(max_steps=4, micro_batch_size=1),
                                model=make_model(version=version))
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out), strategy, version), nprocs=2, join=True)
    result = torch.load(out / "result.pt", weights_only=True)
    assert result["losses"] == pytest.approx(single, rel=1e-5)
    assert torch.allclose(result["head"], trainer.model.head.weight, atol=1e-6)
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)  # whole, not shards
    assert ckpt["step"] == 4 and torch.allclose(ckpt["model"]["head.weight"], result["head"])


def test_fsdp_units_are_the_blocks_of_every_backbone_wherever_they_sit():
    """FSDP shards each residual block: Eagle/Finch Blocks, GoldFinchBlocks (also inside a
    VisualRWKV, as `rwkv.blocks`) and AudioRWKV's blocks; nothing else becomes a unit."""
    from rwkv_mm.audio.model import AudioRWKV, AudioRWKVConfig
    from rwkv_mm.backbone import RWKVConfig
    from rwkv_mm.backbone.goldfinch import GoldFinchBlock
    from rwkv_mm.backbone.model import Block
    from rwkv_mm.vision.model import VisualRWKV

    finch, gold = make_model(), make_model(version="goldfinch")
    assert fsdp_units(finch) == list(finch.blocks) and all(isinstance(b, Block) for b in finch.blocks)
    assert fsdp_units(gold) == list(gold.blocks)
    assert all(isinstance(b, GoldFinchBlock) for b in gold.blocks) and gold.blocks[1].is_gold
    visual = VisualRWKV(gold, None, torch.nn.Linear(8, 32, bias=False))
    assert fsdp_units(visual) == list(gold.blocks)
    audio = AudioRWKV(AudioRWKVConfig(backbone=RWKVConfig(n_layer=2, n_embd=32, head_size=16, dim_ffn=128),
                                      num_classes=3, num_mel_bins=32, target_frames=32))
    assert fsdp_units(audio) == list(audio.blocks)
