"""Deterministic, resumable order of training samples, shared out across processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch

from rwkv_mm.errors import UserError

T = TypeVar("T")


@dataclass
class DataPosition:
    """Where the sample stream stands: epoch number and index into that epoch's permutation."""

    epoch: int = 0
    cursor: int = 0


class EpochOrder:
    """A seeded permutation of the dataset per epoch; `next_global_batch` hands out the indices of
    one optimizer step (all processes together), crossing epoch boundaries when needed. The
    position is plain data, saved in checkpoints, so a resumed run sees the same samples."""

    def __init__(self, n_samples: int, seed: int, position: DataPosition | None = None) -> None:
        if n_samples <= 0:
            raise UserError("the training set is empty", fix="check the recipe's data section")
        self.n = n_samples
        self.seed = seed
        self.position = position or DataPosition()
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm

    def next_global_batch(self, batch_size: int) -> list[int]:
        """Indices of the next `batch_size` samples."""
        return [index for index, _ in self.next_draws(batch_size)]

    def next_draws(self, batch_size: int) -> list[tuple[int, int]]:
        """The next `batch_size` samples as (index, draw number): the draw number counts the
        samples handed out since the start (epoch · n + cursor), so it names one draw of the run
        whatever the batch size, world size or number of data workers (it seeds the sample's
        random crops or weighted draws)."""
        out: list[tuple[int, int]] = []
        while len(out) < batch_size:
            perm = self._permutation(self.position.epoch)
            start = self.position.cursor
            take = min(batch_size - len(out), self.n - start)
            first = self.position.epoch * self.n + start
            out.extend((perm[start + k], first + k) for k in range(take))
            self.position.cursor += take
            if self.position.cursor == self.n:
                self.position = DataPosition(self.position.epoch + 1, 0)
        return out


def shard(indices: list[T], rank: int, world: int, micro_batch: int) -> list[list[T]]:
    """This process's share of a global batch (indices or draws), cut into micro-batches."""
    per_rank = len(indices) // world
    mine = indices[rank * per_rank:(rank + 1) * per_rank]
    return [mine[i:i + micro_batch] for i in range(0, len(mine), micro_batch)]
