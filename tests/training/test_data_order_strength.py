"""The training sample order, checked by counting samples (no other test looks at it directly:
resume and two-process tests compare the order with itself, so an order that repeated the same
permutation every epoch, or lost a sample at each epoch boundary, passed them)."""

from __future__ import annotations

import pytest

from rwkv_mm.training.data_order import DataPosition, EpochOrder, shard


def stream(order: EpochOrder, batch_size: int, n_batches: int) -> list[list[int]]:
    return [order.next_global_batch(batch_size) for _ in range(n_batches)]


@pytest.mark.parametrize("n,batch_size", [(10, 4), (7, 7), (5, 8), (12, 3)])
def test_every_epoch_is_a_permutation_across_batch_boundaries(n, batch_size):
    batches = stream(EpochOrder(n, seed=5), batch_size, 4 * n)
    assert all(len(b) == batch_size for b in batches)
    flat = [i for b in batches for i in b]
    epochs = [flat[e * n:(e + 1) * n] for e in range(len(flat) // n)]
    assert len(epochs) >= 4
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))


def test_each_epoch_and_each_seed_has_its_own_order():
    n = 50
    flat = [i for b in stream(EpochOrder(n, seed=1), 10, 15) for i in b]
    epochs = [tuple(flat[e * n:(e + 1) * n]) for e in range(3)]
    assert len(set(epochs)) == 3  # a reshuffle per epoch (equal by chance: ~1e-64)
    other = [i for b in stream(EpochOrder(n, seed=2), 10, 5) for i in b]
    assert tuple(other) != epochs[0]
    again = [i for b in stream(EpochOrder(n, seed=1), 10, 15) for i in b]
    assert again == flat  # and the same seed repeats it


def test_a_saved_position_continues_the_same_stream():
    whole = stream(EpochOrder(9, seed=3), 4, 12)
    first = EpochOrder(9, seed=3)
    stream(first, 4, 5)
    resumed = EpochOrder(9, seed=3, position=DataPosition(**vars(first.position)))
    assert stream(resumed, 4, 7) == whole[5:]


@pytest.mark.parametrize("world,micro", [(1, 2), (2, 1), (2, 3), (4, 3)])
def test_shards_split_a_global_batch_into_disjoint_micro_batches(world, micro):
    batch = list(range(100, 100 + 12))  # 12 = world · micro · accumulation steps
    parts = [shard(batch, rank, world, micro) for rank in range(world)]
    for micro_batches in parts:
        assert all(len(m) == micro for m in micro_batches)
        assert len(micro_batches) == 12 // (world * micro)
    assert sorted(i for p in parts for m in p for i in m) == batch  # each sample on one rank, once
