"""Batches fetched off the training process: a `torch.utils.data.DataLoader` whose workers read
and collate the micro-batches the trainer will ask for, in the trainer's own order.

The guarantees of fetching in the training process are kept:
- the order is `EpochOrder`'s, drawn in the training process (the loader's sampler) one global
  batch at a time and sharded per process and micro-batch, so 0 (fetched in the training
  process, when asked), 1 or N workers give the same batches;
- every sample is fetched under an RNG seeded by its draw number (its place in the run's sample
  stream), so random crops and weighted draws (`BalancedDraws`) do not depend on which process
  fetches it, nor on the world size; the training process's own RNG is left untouched;
- a step's last micro-batch carries the data position after its global batch, which the trainer
  takes when it *uses* the batch: a checkpoint resumes after the last consumed step, whatever
  the workers had fetched ahead;
- a bad sample's `UserError` raised in a worker reaches the training process as itself (same
  type, same text), and what a dataset counts while skipping bad samples (`on_error: skip`)
  travels with the micro-batch it was counted for and is added to the training process's
  dataset when that micro-batch arrives (a dataset, or the one it wraps as `.dataset`, that
  counts offers `take_worker_report()` and `merge_worker_report(report)`).
Workers start by fork on Linux (nothing to pickle; they never touch CUDA), by the platform's
default elsewhere; batches are pinned on CUDA. `BatchStream.close()` stops the workers (the
trainer closes on errors, on KeyboardInterrupt and at the end of `fit`).
"""

from __future__ import annotations

import contextlib
import pickle
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, get_worker_info

from rwkv_mm.errors import UserError

from .data_order import DataPosition, EpochOrder, shard

Batch = dict[str, Any]
#: errors of the user's data a worker sends back as they are (the CLI's user errors)
USER_ERRORS = (UserError, FileNotFoundError, PermissionError)
_U64 = (1 << 64) - 1


def draw_seed(seed: int, draw: int) -> int:
    """The RNG seed of draw number `draw` of a run seeded with `seed` (splitmix64 of both, so
    neighbouring draws get unrelated streams). Evaluation samples use negative draw numbers."""
    x = (seed * 0x9E3779B97F4A7C15 + draw + 1) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return (x ^ (x >> 31)) >> 1  # 63 bits: any torch or Python seed


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """torch's CPU generator and Python's `random` seeded with `seed` inside the block, restored
    after it (the CUDA generators are not touched)."""
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)


@dataclass(frozen=True)
class FetchTask:
    """One micro-batch to fetch: dataset indices, one RNG seed per sample and, on the last
    micro-batch of a training step, the data position after that step's global batch."""

    indices: tuple[int, ...]
    seeds: tuple[int, ...]
    step_end: DataPosition | None = None


@dataclass
class Fetched:
    """What comes back with a micro-batch (or instead of it): its task, what the worker's copy
    of the dataset counted while fetching it, and the user error that stopped it."""

    task: FetchTask
    report: Any = None
    error: BaseException | None = None


def train_tasks(n_samples: int, seed: int, position: DataPosition, batch_size: int, rank: int,
                world: int, micro_batch: int) -> Iterator[FetchTask]:
    """This process's micro-batches of every global batch from `position` on, without end."""
    order = EpochOrder(n_samples, seed, replace(position))
    while True:
        parts = shard(order.next_draws(batch_size), rank, world, micro_batch)
        for k, part in enumerate(parts):
            end = replace(order.position) if k == len(parts) - 1 else None
            yield FetchTask(tuple(i for i, _ in part), tuple(draw_seed(seed, d) for _, d in part), end)


def eval_tasks(n_samples: int, micro_batch: int, seed: int) -> list[FetchTask]:
    """Micro-batches of the first `n_samples` samples, in order (sample i: draw number -1 - i)."""
    return [FetchTask(tuple(range(start, min(start + micro_batch, n_samples))),
                      tuple(draw_seed(seed, -1 - i) for i in range(start, min(start + micro_batch, n_samples))))
            for start in range(0, n_samples, micro_batch)]


# ----------------------------------------------------------------------------- datasets that count
def _counting(dataset: Any) -> Any:
    """The dataset that counts skipped samples: `dataset` or one it wraps (`.dataset`), or None."""
    for _ in range(8):
        if dataset is None or hasattr(dataset, "take_worker_report"):
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None


def take_report(dataset: Any) -> Any:
    """What (a copy of) `dataset` counted since the last call, forgotten there; None if it counts nothing."""
    counting = _counting(dataset)
    return counting.take_worker_report() if counting is not None else None


def merge_report(dataset: Any, report: Any) -> None:
    """Add a worker's `report` (from `take_report`) to the counts of `dataset`."""
    counting = _counting(dataset)
    if counting is not None and report is not None:
        counting.merge_worker_report(report)


def check_workers(dataset: Any, num_workers: int) -> None:
    """A `UserError` when `dataset` (or one it wraps) must be read in the training process
    (its `needs_main_process` says why) but `num_workers` > 0."""
    for _ in range(8):
        if dataset is None or num_workers == 0:
            return
        reason = getattr(dataset, "needs_main_process", None)
        if reason:
            raise UserError(f"train.num_workers={num_workers}: {reason}",
                            fix="set train.num_workers=0, or turn that option off")
        dataset = getattr(dataset, "dataset", None)


# ----------------------------------------------------------------------------- the loader
def _portable(err: BaseException) -> BaseException:
    """`err` if it survives pickling (type and text kept), else a UserError with its text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # an error type whose constructor takes other arguments
        return UserError(str(err))


class _Fetcher:
    """The loader's map-style dataset: a FetchTask -> (collated micro-batch or None, Fetched)."""

    def __init__(self, dataset: Any, collate: Callable[[list], Batch]) -> None:
        self.dataset, self.collate = dataset, collate

    def __getitem__(self, task: FetchTask) -> tuple[Batch | None, Fetched]:
        in_worker = get_worker_info() is not None
        try:
            samples = []
            for index, seed in zip(task.indices, task.seeds):
                with seeded_rng(seed):
                    samples.append(self.dataset[index])
            batch = self.collate(samples)
        except USER_ERRORS as err:
            if not in_worker:
                raise
            return None, Fetched(task, take_report(self.dataset), _portable(err))
        return batch, Fetched(task, take_report(self.dataset) if in_worker else None)


def _start_worker(_worker_id: int) -> None:
    """In a new worker: count from zero (the training process holds the counts so far)."""
    take_report(get_worker_info().dataset.dataset)


def _as_is(item: Any) -> Any:
    return item


def start_method() -> str | None:
    """How workers start: fork on Linux, the platform's default elsewhere."""
    return "fork" if sys.platform.startswith("linux") else None


class BatchStream:
    """Micro-batches of `tasks`, fetched by `num_workers` processes, each `prefetch`
    micro-batches ahead (0 workers: in this process, when asked), pinned when `pin_memory`."""

    def __init__(self, dataset: Any, collate: Callable[[list], Batch], tasks: Iterable[FetchTask],
                 num_workers: int = 0, prefetch: int = 2, pin_memory: bool = False) -> None:
        self.dataset = dataset
        loader = DataLoader(_Fetcher(dataset, collate), sampler=tasks, batch_size=None, collate_fn=_as_is,
                            num_workers=num_workers, prefetch_factor=prefetch if num_workers else None,
                            pin_memory=pin_memory, worker_init_fn=_start_worker if num_workers else None,
                            multiprocessing_context=start_method() if num_workers else None,
                            generator=torch.Generator().manual_seed(0))  # not the global RNG
        self._iter: Iterator | None = iter(loader)

    def next_batch(self) -> tuple[Batch, FetchTask]:
        """The next micro-batch and its task. Its worker's counts are merged first; its error is
        raised (the workers stopped); StopIteration after the last task."""
        if self._iter is None:
            raise RuntimeError("the batch stream is closed")
        try:
            batch, fetched = next(self._iter)
        except BaseException:  # an error in this process, a worker's crash, the end, Ctrl-C
            self.close()
            raise
        merge_report(self.dataset, fetched.report)
        if fetched.error is not None:
            self.close()
            raise fetched.error
        return batch, fetched.task

    def next_step(self) -> tuple[list[Batch], DataPosition]:
        """This process's micro-batches of the next training step, and the data position after it."""
        batches = []
        while True:
            batch, task = self.next_batch()
            batches.append(batch)
            if task.step_end is not None:
                return batches, task.step_end

    def __iter__(self) -> Iterator[Batch]:
        while True:
            try:
                batch, _ = self.next_batch()
            except StopIteration:
                return
            yield batch

    def close(self) -> None:
        """Stop the workers (nothing to do without); idempotent."""
        it, self._iter = self._iter, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


@contextlib.contextmanager
def eval_batches(dataset: Any, collate: Callable[[list], Batch], n_samples: int, micro_batch: int,
                 seed: int, **loading: Any) -> Iterator[Iterator[Batch]]:
    """The micro-batches of the first `n_samples` samples of `dataset`, workers stopped on leaving."""
    stream = BatchStream(dataset, collate, eval_tasks(n_samples, micro_batch, seed), **loading)
    try:
        yield iter(stream)
    finally:
        stream.close()
