"""Deterministic, resumable order of training samples, shared out across processes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
            raise ValueError("the training set is empty")
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
        out: list[int] = []
        while len(out) < batch_size:
            perm = self._permutation(self.position.epoch)
            take = min(batch_size - len(out), self.n - self.position.cursor)
            out.extend(perm[self.position.cursor:self.position.cursor + take])
            self.position.cursor += take
            if self.position.cursor == self.n:
                self.position = DataPosition(self.position.epoch + 1, 0)
        return out


def shard(indices: list[int], rank: int, world: int, micro_batch: int) -> list[list[int]]:
    """This process's share of a global batch, cut into micro-batches."""
    per_rank = len(indices) // world
    mine = indices[rank * per_rank:(rank + 1) * per_rank]
    return [mine[i:i + micro_batch] for i in range(0, len(mine), micro_batch)]
