"""Resume across strategies and world sizes (issue 15): a checkpoint holds the whole model and
optimizer states, so one written under FSDP resumes under DDP and the other way round, and one
written by 2 processes resumes in 1; the resumed steps equal a straight run within fp32 rounding
(the global batch order and each sample's draw do not depend on the world size)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rwkv_mm.errors import UserError
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.distributed import optimizer_state_by_name, optimizer_state_by_number
from rwkv_mm.training.trainer import Trainer
from rwkv_test_utils import gloo_process_group, single_threaded
from training.toy_run import collate, make_dataset, make_model

HALF, STEPS = 4, 8


class Killed(Exception):
    """Stands for a run killed after the checkpoint of step HALF."""


def config(strategy: str = "ddp") -> TrainConfig:
    # micro_batch_size 0: 4 sequences per step on one process, 2 on each of two; the frozen
    # embedding stays whole under FSDP (frozen, outside the blocks), the rest is sharded
    return TrainConfig(max_steps=STEPS, batch_size=4, lr=5e-3, lr_final=1e-3, warmup_steps=2,
                       save_every=HALF, eval_every=0, log_every=1, seed=3, strategy=strategy,
                       freeze=["emb.*"])


def train(run_dir: Path, strategy: str = "ddp", resume: bool = False, seed: int = 0,
          kill: bool = False) -> tuple[list[float], Trainer]:
    """Train to STEPS (from the checkpoint with `resume`); `kill`: stop one step after the
    checkpoint of step HALF."""
    losses: list[float] = []

    def on_step(trainer: Trainer, record: dict) -> None:
        losses.append(record["loss"])
        if kill and trainer.step == HALF + 1:
            raise Killed

    trainer = Trainer(make_model(seed=seed), config(strategy), run_dir, make_dataset(), collate, device="cpu")
    try:
        trainer.fit(resume=resume, on_step=on_step)
    except Killed:
        pass
    return losses, trainer


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    """Fresh halves under FSDP (a) and DDP (b); a copy of (a) for a one-process resume; then (a)
    resumed under DDP and (b) under FSDP, each to the end."""
    import torch.distributed as dist

    out_dir = Path(out)
    with gloo_process_group(rank, world, init_file):
        train(out_dir / "a", "fsdp", kill=True)
        train(out_dir / "b", "ddp", kill=True)
        if rank == 0:
            shutil.copytree(out_dir / "a", out_dir / "a1")
        dist.barrier()
        a_losses, a = train(out_dir / "a", "ddp", resume=True, seed=99)
        b_losses, b = train(out_dir / "b", "fsdp", resume=True, seed=99)
        b_head = b.full_model_state_dict().get("head.weight")  # collective under FSDP
        if rank == 0:
            torch.save({"fsdp_to_ddp": a_losses, "ddp_to_fsdp": b_losses, "a_head": a.model.head.weight.detach(),
                        "b_head": b_head}, out_dir / "result.pt")


@pytest.mark.slow
def test_fsdp_ddp_and_two_to_one_process_resumes_continue_a_straight_run(tmp_path):
    with single_threaded():
        straight, reference = train(tmp_path / "straight")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    head = reference.model.head.weight.detach()
    for name in ("fsdp_to_ddp", "ddp_to_fsdp"):
        assert result[name] == pytest.approx(straight[HALF:], rel=1e-5), name
    torch.testing.assert_close(result["a_head"], head, rtol=0, atol=1e-5)
    torch.testing.assert_close(result["b_head"], head, rtol=0, atol=1e-5)
    ckpt = torch.load(tmp_path / "a1" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["strategy"] == "fsdp" and ckpt["world"] == 2 and ckpt["step"] == HALF
    with single_threaded():  # written by 2 FSDP processes, resumed by one
        one, trainer = train(tmp_path / "a1", resume=True, seed=99)
    assert one == pytest.approx(straight[HALF:], rel=1e-5)
    torch.testing.assert_close(trainer.model.head.weight.detach(), head, rtol=0, atol=1e-5)


def test_the_optimizer_state_converts_between_numbered_and_named_parameters():
    model = make_model()
    trainer = Trainer(model, config(), Path("/nonexistent/unused"), make_dataset(), collate, device="cpu")
    with single_threaded():
        trainer.train_step()
    numbered = trainer.optimizer.state_dict()
    named = optimizer_state_by_name(model, trainer.optimizer, numbered)
    assert set(named["state"]) <= {name for name, _ in model.named_parameters()}
    assert optimizer_state_by_name(model, trainer.optimizer, named) is named  # already named
    back = optimizer_state_by_number(model, trainer.optimizer, named)
    assert back["param_groups"] == numbered["param_groups"]
    assert back["state"].keys() == numbered["state"].keys()
    for k, state in numbered["state"].items():
        assert all(torch.equal(v, back["state"][k][key]) for key, v in state.items())


def test_a_checkpoint_of_another_model_is_a_user_error(tmp_path):
    with single_threaded():
        train(tmp_path, kill=True)
        wider = Trainer(make_model(n_embd=48), config(), tmp_path, make_dataset(), collate, device="cpu")
        with pytest.raises(UserError, match="does not fit this model"):
            wider.load_checkpoint()
