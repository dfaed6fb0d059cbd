"""State tuning in the shared trainer (`train.state_tuning`): only the initial states train
(gradients reach nothing else), without weight decay; the loss goes down; a killed run resumes
exactly; two gloo processes (DDP, FSDP2) equal one; the config's errors name their key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from rwkv_mm.backbone import RWKVConfig, UserError, build_backbone
from rwkv_mm.errors import ConfigError
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.state_tuning import prepare_state_tuning
from rwkv_mm.training.trainer import Trainer, lm_loss
from rwkv_test_utils import gloo_process_group, single_threaded, tiny_model
from training.toy_run import collate, make_dataset


def tuning_model(seed: int = 0):
    """Finch L1 D32 (2 heads of 16), V=40, with random weights: App. I's zero output
    projections would leave the initial state nothing to change."""
    return tiny_model("6", n_layer=1, n_embd=32, head_size=16, vocab_size=40, seed=seed)


def config(**kw) -> TrainConfig:
    base = dict(max_steps=20, batch_size=4, micro_batch_size=2, lr=0.2, lr_final=0.02, warmup_steps=2,
                save_every=10, eval_every=0, log_every=1, seed=3, state_tuning=True)
    base.update(kw)
    return TrainConfig(**base)


def train(run_dir, cfg, model=None, resume=False, on_step=None):
    losses = []

    def record(trainer, metrics):
        losses.append(metrics["loss"])
        if on_step:
            on_step(trainer, metrics)

    trainer = Trainer(model or tuning_model(), cfg, run_dir, make_dataset(), collate, device="cpu")
    trainer.fit(resume=resume, on_step=record)
    return losses, trainer


@pytest.mark.parametrize("shift", [False, True], ids=["wkv", "wkv+shift"])
def test_only_the_states_train_and_get_gradients(tmp_path, shift):
    model = tuning_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, trainer = train(tmp_path, config(max_steps=3, state_tuning_shift=shift), model=model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {"blocks.0.att.time_state"} | ({"blocks.0.att.shift_state", "blocks.0.ffn.shift_state"}
                                              if shift else set())
    assert names == expected
    assert trainer.param_counts["trainable"] == 2 * 16 * 16 + (2 * 32 if shift else 0)
    for name, value in model.state_dict().items():
        if name in expected:
            assert not torch.equal(value, torch.zeros_like(value)), name  # trained away from zeros
        else:
            assert torch.equal(value, before[name]), name  # every weight as it was
    # one more backward: a gradient on the states, none anywhere else
    model.zero_grad(set_to_none=True)
    loss_sum, n, _ = lm_loss(model, collate(make_dataset()[:2]))
    (loss_sum / n).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (name in expected), name
    # AdamW: the states in the group without weight decay, at the base learning rate
    groups = [g for g in trainer.optimizer.param_groups if g["params"]]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and groups[0]["lr_scale"] == 1.0


def test_state_tuning_lowers_the_loss_and_resumes_exactly(tmp_path):
    straight, t_straight = train(tmp_path / "a", config())
    assert sum(straight[-4:]) / 4 < sum(straight[:4]) / 4 - 0.05

    def kill(trainer, _):
        if trainer.step == 13:
            raise KeyboardInterrupt  # after the checkpoint of step 10

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", config(), on_step=kill)
    resumed, t_resumed = train(tmp_path / "b", config(), model=tuning_model(seed=99), resume=True)
    assert resumed == straight[10:]  # bit-identical on the CPU
    for (name, p), q in zip(t_straight.model.named_parameters(), t_resumed.model.parameters()):
        assert torch.equal(p, q), name
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["model"]["blocks.0.att.time_state"].shape == (2, 16, 16)


def _worker(rank: int, world: int, init_file: str, out_dir: str, strategy: str) -> None:
    with gloo_process_group(rank, world, init_file):
        losses, trainer = train(Path(out_dir), config(max_steps=4, micro_batch_size=1, save_every=2,
                                                      strategy=strategy, state_tuning_shift=True))
        full = trainer.full_model_state_dict()  # collective under FSDP; whole on rank 0 only
        if rank == 0:
            torch.save({"losses": losses, "state": full["blocks.0.att.time_state"].detach(),
                        "shift": full["blocks.0.ffn.shift_state"].detach()}, f"{out_dir}/result.pt")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one_process(tmp_path, strategy):
    with single_threaded():
        single, trainer = train(tmp_path / "single", config(max_steps=4, micro_batch_size=1,
                                                            state_tuning_shift=True))
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out), strategy), nprocs=2, join=True)
    result = torch.load(out / "result.pt", weights_only=True)
    assert result["losses"] == pytest.approx(single, rel=1e-5)
    assert torch.allclose(result["state"], trainer.model.blocks[0].att.time_state, atol=1e-6)
    assert torch.allclose(result["shift"], trainer.model.blocks[0].ffn.shift_state, atol=1e-6)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="state_tuning_shift=True: expected only with state_tuning"):
        TrainConfig(state_tuning_shift=True)
    with pytest.raises(ConfigError, match="state_tuning='yes': expected true or false"):
        TrainConfig(state_tuning="yes")
    with pytest.raises(UserError, match=r"Sequential holds no language model.*train\.state_tuning"):
        prepare_state_tuning(nn.Sequential(nn.Linear(4, 4)), config())
    goose = build_backbone(RWKVConfig(version="7", n_layer=1, n_embd=32, head_size=16, vocab_size=40))
    with pytest.raises(UserError, match=r"Eagle and Finch only, not Goose.*train\.state_tuning"):
        prepare_state_tuning(goose, config())
    assert prepare_state_tuning(tuning_model(), config(state_tuning=False)) == config(state_tuning=False)


def test_recipe_errors_exit_2_naming_the_key(tmp_path):
    from robustness.cli_utils import assert_user_error, run_cli

    result = run_cli("train", "music/abc_tiny", "train.state_tuning_shift=true", "--run-dir", str(tmp_path / "r"))
    assert_user_error(result, "train.state_tuning_shift")
    result = run_cli("train", "visual/stage1_tiny", "train.state_tuning=true", "--run-dir", str(tmp_path / "v"))
    assert_user_error(result, "train.state_tuning", "stage 1")
    assert not (tmp_path / "r").exists() and not (tmp_path / "v").exists()


def test_metrics_are_logged_like_any_run(tmp_path):
    train(tmp_path, config(max_steps=2))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
