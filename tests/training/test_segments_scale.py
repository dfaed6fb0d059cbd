"""Segment training at scale: two gloo processes (DDP and FSDP2, samples of different lengths so
the processes run different numbers of segments) train exactly like one process on whole
sequences, and the peak memory of a segmented step stays flat as the sequence grows while the
whole-sequence step's grows with it (measured in fresh processes, `segments_probe.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwkv_mm.constants import IGNORE_INDEX
from rwkv_test_utils import single_threaded

PROBE = Path(__file__).with_name("segments_probe.py")


def ragged_dataset(n: int = 16, seed: int = 1) -> list[dict]:
    """Token sequences of 5..19 positions; sample i has its first i % 3 targets ignored."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n):
        T = 5 + (i * 7) % 15
        seq = torch.randint(4, 40, (T + 1,), generator=g)
        targets = seq[1:].clone()
        targets[: i % 3] = IGNORE_INDEX
        data.append({"input_ids": seq[:-1], "targets": targets})
    return data


def pad_collate(samples: list[dict]) -> dict:
    T = max(len(s["input_ids"]) for s in samples)
    ids = torch.zeros(len(samples), T, dtype=torch.long)
    targets = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)
    for b, s in enumerate(samples):
        ids[b, :len(s["input_ids"])] = s["input_ids"]
        targets[b, :len(s["targets"])] = s["targets"]
    return {"input_ids": ids, "targets": targets}


def train(run_dir: Path, **overrides) -> tuple[list[float], torch.nn.Module]:
    from rwkv_mm.training.trainer import Trainer
    from training.test_trainer import config
    from training.toy_run import make_model

    model = make_model(version="6")
    # L2Wrap on: its divisor is each process's share of the global positions, not rounded (the
    # ragged samples make odd totals, which an int share got wrong by a rounding)
    cfg = config(max_steps=3, micro_batch_size=1, save_every=0, loggers=["jsonl"], lr=3e-3, l2wrap=True, **overrides)
    trainer = Trainer(model, cfg, run_dir, ragged_dataset(), pad_collate, device="cpu")
    losses = [trainer.train_step()["loss"] for _ in range(3)]
    trainer.close()
    return losses, trainer


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str, strategy: str) -> None:
    from rwkv_test_utils import gloo_process_group

    with gloo_process_group(rank, world, init_file):
        losses, trainer = train(Path(out_dir) / f"rank{rank}", strategy=strategy, segment_len=4)
        full = trainer.full_model_state_dict()  # collective under FSDP
        if rank == 0:
            torch.save({"losses": losses, "state": {k: v.detach() for k, v in full.items()}},
                       f"{out_dir}/result.pt")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])  # ~15 s each on 2 cores
def test_segments_under_two_gloo_processes_equal_one_process_on_whole_sequences(tmp_path, strategy):
    """Each process's micro-batch is one sample (5..19 positions, segments of 4): the processes
    run different numbers of segments; gradients are synchronised once per step (DDP: no_sync
    until the last backward; FSDP2: the shorter process runs zero-gradient segments so every
    parameter gather meets its peer's)."""
    import torch.multiprocessing as mp

    with single_threaded():
        single, trainer = train(tmp_path / "single")  # whole sequences, the same micro-batches
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), str(out), strategy), nprocs=2, join=True)
    result = torch.load(out / "result.pt", weights_only=True)
    assert result["losses"] == pytest.approx(single, rel=1e-5)
    for name, p in trainer.model.state_dict().items():  # Adam: summation-order noise of near-zero
        # gradients moves weights by up to ~lr/100
        torch.testing.assert_close(result["state"][name], p, rtol=1e-4, atol=5e-5, msg=name)


def measure(spec: dict) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "16384", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(PROBE), json.dumps(spec)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_peak_memory_with_segments_stays_flat_as_the_sequence_grows():
    """Finch L2 D256, segments of 256: T = 1024 and 8192 (8x) peak within 1.25x (+4 MiB) of each
    other, while the whole-sequence step at T = 8192 needs several times the segmented peak."""
    base = dict(version="6", n_layer=2, n_embd=256, vocab_size=256, head_size=64, loss_chunk=256)
    short = measure({**base, "seq_len": 1024, "segment_len": 256})["peak"]
    long = measure({**base, "seq_len": 8192, "segment_len": 256})["peak"]
    whole = measure({**base, "seq_len": 8192, "segment_len": 0})["peak"]
    assert long <= 1.25 * short + 4 * 2**20, (short, long, whole)
    assert whole > 3 * long, (short, long, whole)
