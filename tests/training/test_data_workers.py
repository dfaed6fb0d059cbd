"""Data loading off the training process (issue 15): `train.num_workers` worker processes give
the same batches, losses and resume points as reading in the training process, and bad samples
found in a worker stop the run with the same error, or are counted in the training process."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import torch

from rwkv_mm.errors import UserError
from rwkv_mm.training import data_loading
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.data_loading import BatchStream, check_workers, eval_batches, train_tasks
from rwkv_mm.training.data_order import DataPosition, EpochOrder, shard
from rwkv_mm.training.trainer import Trainer
from rwkv_test_utils import single_threaded
from training.toy_run import collate, make_dataset, make_model

WORKERS = (0, 1, 2)


class RandomCrops:
    """Toy LM samples cut at a random offset (torch RNG) and with a Python-random last target:
    batches equal across worker counts only if every sample's RNG is seeded the same way.
    Sample 5 is bad: `bad="raise"` raises a UserError naming it."""

    def __init__(self, n: int = 24, bad: str = "") -> None:
        self.data, self.bad = make_dataset(n, T=16), bad

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        if self.bad == "raise" and i == 5:
            raise UserError("sample 5: cannot read it", where="toy.json, item 5", fix="fix or remove it")
        import random
        start = int(torch.randint(0, 5, ()))
        s = self.data[i]
        targets = s["targets"][start:start + 12].clone()
        targets[-1] = random.randrange(4, 40)
        return {"input_ids": s["input_ids"][start:start + 12], "targets": targets,
                "index": torch.tensor(i)}


def config(**kw) -> TrainConfig:
    base = dict(max_steps=8, batch_size=4, micro_batch_size=2, lr=2e-2, lr_final=1e-3, warmup_steps=2,
                save_every=4, eval_every=4, eval_batches=3, log_every=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def train(run_dir, cfg, dataset, resume=False, on_step=None, model=None):
    losses, seen = [], []

    def record(trainer, metrics):
        losses.append(metrics["loss"])
        if on_step:
            on_step(trainer, metrics)

    trainer = Trainer(model or make_model(), cfg, run_dir, dataset, collate, eval_set=RandomCrops(10),
                      device="cpu")
    trainer.fit(resume=resume, on_step=record)
    return losses, trainer


def no_workers_left() -> bool:
    return not multiprocessing.active_children()


def stream_of(dataset, num_workers, steps, batch_size=4, world=1, rank=0, micro=2, seed=3):
    tasks = train_tasks(len(dataset), seed, DataPosition(), batch_size, rank, world, micro)
    stream = BatchStream(dataset, collate, tasks, num_workers=num_workers, prefetch=2)
    try:
        return [stream.next_step() for _ in range(steps)]
    finally:
        stream.close()


def test_the_tasks_follow_epoch_order_sharded_per_process_and_micro_batch():
    order, seen = EpochOrder(10, seed=7), {0: [], 1: []}
    batches = [order.next_global_batch(4) for _ in range(6)]
    expected = [shard(batch, rank, 2, 1) for batch in batches for rank in (0, 1)]
    for rank in (0, 1):
        tasks = train_tasks(10, 7, DataPosition(), 4, rank, 2, 1)
        seen[rank] = [[list(next(tasks).indices) for _ in range(2)] for _ in range(6)]
    assert [seen[rank][step] for step in range(6) for rank in (0, 1)] == expected
    ends = [t.step_end for t, _ in zip(train_tasks(10, 7, DataPosition(), 4, 0, 1, 2), range(6))]
    assert ends[0] is None and ends[1] == DataPosition(0, 4) and ends[5] == DataPosition(1, 2)


def test_a_sample_draw_has_one_seed_whatever_the_world_size():
    one = [t.seeds for t, _ in zip(train_tasks(10, 7, DataPosition(), 4, 0, 1, 4), range(5))]
    two = [(a.seeds + b.seeds) for a, b, _ in zip(train_tasks(10, 7, DataPosition(), 4, 0, 2, 2),
                                                  train_tasks(10, 7, DataPosition(), 4, 1, 2, 2), range(5))]
    assert one == two and len({s for seeds in one for s in seeds}) == 20  # every draw its own seed


@pytest.mark.parametrize("num_workers", (1, 2))
def test_workers_give_the_same_batches_as_the_training_process(num_workers):
    dataset = RandomCrops()
    before = torch.get_rng_state()
    here = stream_of(dataset, 0, 9)
    assert torch.equal(torch.get_rng_state(), before)  # fetching leaves the trainer's RNG alone
    there = stream_of(dataset, num_workers, 9)
    assert [pos for _, pos in there] == [pos for _, pos in here]
    for (a, _), (b, _) in zip(here, there):
        for x, y in zip(a, b):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert no_workers_left()


def test_same_losses_weights_and_evaluation_for_0_1_2_workers(tmp_path):
    results = {}
    with single_threaded():
        for n in WORKERS:
            losses, trainer = train(tmp_path / str(n), config(num_workers=n), RandomCrops())
            val = [json.loads(line)["val_loss"] for line in (tmp_path / str(n) / "metrics.jsonl").read_text()
                   .splitlines() if "val_loss" in line]
            results[n] = (losses, val, trainer.model.head.weight.detach().clone())
    assert no_workers_left()
    for n in (1, 2):
        assert results[n][0] == results[0][0] and results[n][1] == results[0][1]  # bit-identical
        assert torch.equal(results[n][2], results[0][2])


def test_kill_and_resume_mid_epoch_with_workers_equals_a_straight_run(tmp_path):
    """24 samples, 4 per step: the checkpoint of step 10 is mid-epoch (epoch 1, cursor 16), while
    two workers have fetched steps beyond it; the kill comes at step 13."""
    cfg = config(max_steps=20, save_every=10, eval_every=0, num_workers=2, prefetch=3)
    with single_threaded():
        straight, t_straight = train(tmp_path / "a", cfg, RandomCrops())

        def kill(trainer, _):
            if trainer.step == 13:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(tmp_path / "b", cfg, RandomCrops(), on_step=kill)
        assert no_workers_left()  # stopped on the way out, not left to the garbage collector
        ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
        assert ckpt["step"] == 10 and ckpt["data"] == {"epoch": 1, "cursor": 16}  # consumed, not fetched
        resumed, t_resumed = train(tmp_path / "b", cfg, RandomCrops(), resume=True, model=make_model(seed=99))
    assert resumed == straight[10:]
    for p, q in zip(t_straight.model.parameters(), t_resumed.model.parameters()):
        assert torch.equal(p, q)
    assert no_workers_left()


@pytest.mark.parametrize("num_workers", WORKERS)
def test_a_bad_sample_in_a_worker_is_the_same_user_error(tmp_path, num_workers):
    with single_threaded(), pytest.raises(UserError) as err:
        train(tmp_path, config(num_workers=num_workers, max_steps=30), RandomCrops(bad="raise"))
    assert type(err.value) is UserError
    assert str(err.value) == "sample 5: cannot read it, toy.json, item 5: fix or remove it"
    assert "DataLoader worker" not in str(err.value)
    assert no_workers_left()


def test_a_worker_error_of_another_type_keeps_its_text():
    class Odd(UserError):
        def __init__(self, code: int) -> None:  # cannot be rebuilt from its text
            super().__init__(f"odd sample {code}")

    portable = data_loading._portable(Odd(3))
    assert isinstance(portable, UserError) and str(portable) == "odd sample 3"


def test_spawned_workers_work_too(monkeypatch):
    """Where fork is not the start method (macOS, Windows), the fetcher travels by pickling."""
    monkeypatch.setattr(data_loading, "start_method", lambda: "spawn")
    dataset = RandomCrops()
    here, there = stream_of(dataset, 0, 3), stream_of(dataset, 1, 3)
    for (a, _), (b, _) in zip(here, there):
        assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))


def test_evaluation_batches_in_order_with_workers():
    dataset = RandomCrops(10)
    got = {}
    for n in (0, 2):
        with eval_batches(dataset, collate, 7, 3, seed=1, num_workers=n) as batches:
            got[n] = [b["index"].tolist() for b in batches]
    assert got[0] == got[2] == [[0, 1, 2], [3, 4, 5], [6]]
    assert no_workers_left()


def test_a_dataset_read_in_the_training_process_refuses_workers():
    class Cached(list):
        needs_main_process = "data.cache_features runs the vision tower inside the dataset"

    class Wrapper:
        def __init__(self, dataset):
            self.dataset = dataset

    check_workers(Wrapper(Cached()), 0)
    with pytest.raises(UserError, match=r"^train.num_workers=2: data.cache_features .*: set train.num_workers=0"):
        check_workers(Wrapper(Cached()), 2)


# ----------------------------------------------------------------------------- under torchrun
def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    from pathlib import Path

    from rwkv_test_utils import gloo_process_group

    with gloo_process_group(rank, world, init_file):
        losses, _ = train(Path(out), config(num_workers=1, micro_batch_size=1), RandomCrops())
        assert no_workers_left()
        if rank == 0:
            torch.save(losses, Path(out) / "losses.pt")


@pytest.mark.slow
def test_workers_forked_by_two_gloo_processes_match_one_process(tmp_path):
    """Each process of a DDP run forks its own worker; random crops are seeded per draw, so the
    2-process run sees the same global batches as one process reading them itself."""
    import torch.multiprocessing as mp

    with single_threaded():
        single, _ = train(tmp_path / "one", config(num_workers=0), RandomCrops())
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2, join=True)
    assert torch.load(tmp_path / "ddp" / "losses.pt") == pytest.approx(single, rel=1e-5)
