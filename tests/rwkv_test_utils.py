"""Helpers shared by the tests: small models with random (non-degenerate) weights, and the
process-group plumbing of the two-process (gloo) training tests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rwkv_mm.backbone import RWKV, GoldFinch, RWKVConfig, build_backbone


@torch.no_grad()
def randomize_(model: RWKV, seed: int = 0) -> RWKV:
    """Overwrite every parameter with random values of a realistic scale.

    App. I initialisation zeroes output projections and LoRAs, so comparisons with another
    implementation would not exercise them; these weights make every term matter.
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(p, lo, hi):
        p.copy_(torch.rand(p.shape, generator=g) * (hi - lo) + lo)

    def normal(p, std, mean=0.0):
        p.copy_(torch.randn(p.shape, generator=g) * std + mean)

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "time_decay":
            uniform(p, -4.0, 1.0)  # per-step decays from ~0.98 to ~0.07
        elif leaf == "time_faaaa":
            uniform(p, -1.0, 1.0)
        elif leaf.startswith(("time_mix_", "time_maa_")) and p.dim() == 3 and p.shape[:2] == (1, 1):
            uniform(p, 0.0, 1.0)
        elif leaf in ("time_maa_w1", "time_decay_w1"):
            normal(p, 0.5 / math.sqrt(p.shape[0]))
        elif leaf == "time_maa_w2":
            normal(p, 0.1)
        elif leaf == "time_decay_w2":
            normal(p, 0.3)
        elif leaf.endswith("_w1"):  # GoldFinch's other LoRAs (v2, GOLD query/key/value)
            normal(p, 0.5 / math.sqrt(p.shape[0]))
        elif leaf.endswith("_w2"):
            normal(p, 0.1)
        elif name.startswith("emb."):
            normal(p, 1.0)
        elif leaf == "weight" and p.dim() == 1:  # LayerNorm / GroupNorm
            normal(p, 0.1, mean=1.0)
        elif leaf == "bias":
            normal(p, 0.1)
        elif p.dim() == 2:
            normal(p, 1.0 / math.sqrt(p.shape[1]))
        else:
            raise AssertionError(f"randomize_: no rule for {name} {tuple(p.shape)}")
    return model


def tiny_model(version: str = "6", n_layer: int = 2, n_embd: int = 128, vocab_size: int = 300,
               head_size: int = 32, seed: int = 0, **kwargs) -> RWKV | GoldFinch:
    """A small randomly weighted model for fast CPU tests (any version, via build_backbone)."""
    torch.manual_seed(seed)
    config = RWKVConfig(version=version, n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size,
                        head_size=head_size, **kwargs)
    return randomize_(build_backbone(config), seed).eval()


@contextmanager
def single_threaded() -> Iterator[None]:
    """torch on one thread inside the block (as each gloo worker runs), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def gloo_process_group(rank: int, world: int, init_file: str) -> Iterator[None]:
    """One spawned test worker's gloo process group, with torch single-threaded. When the block
    succeeds every rank meets at a barrier before teardown (a rank tearing down while another
    still finishes aborted that one, ~1 run in 10); the group is destroyed in any case."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()
