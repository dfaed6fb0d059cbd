"""The visual runner itself under FSDP (issue 15): two gloo processes train a tiny VisualRWKV
stage 2 with `train.strategy=fsdp`; `run_stage` gathers the whole model on rank 0, which alone
writes `model/` — its `backbone.pth` and `projector.pth` equal those of a one-process run, with
the image features computed by the frozen tower inside the model or by the feature cache
(which runs the tower on its own: frozen parts outside the blocks are not sharded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rwkv_mm.backbone import read_state_dict
from rwkv_mm.recipe import load_recipe
from rwkv_mm.runners import get_runner
from rwkv_test_utils import gloo_process_group, single_threaded

#: stage 2 (projector + LM train) of a fresh tiny Eagle, no quick eval
TINY = ["stage=2", "backbone.version=5", "backbone.n_layer=2", "backbone.n_embd=32", "backbone.head_size=16",
        "vision.custom.image_size=32", "vision.custom.width=32", "vision.custom.layers=1",
        "vision.custom.head_width=16", "data.max_samples=16", "data.ctx_len=96", "data.synthetic=false",
        "train.max_steps=3", "train.batch_size=4", "train.micro_batch_size=1", "train.lr=1e-3",
        "train.warmup_steps=0", "train.save_every=3", "train.log_every=1"]


def overrides(data: Path, *extra: str) -> list[str]:
    return TINY + [f"data.data_path={data}/stage2_qa.json", f"data.image_root={data}", *extra]


def run_visual(data: Path, run_dir: Path, *extra: str) -> dict:
    recipe = load_recipe("visual/stage1_tiny", overrides(data, *extra))
    return get_runner(recipe.runner).fn(recipe.config, run_dir, False)


def _worker(rank: int, world: int, init_file: str, data: str, run_dir: str, cache: str) -> None:
    with gloo_process_group(rank, world, init_file):
        summary = run_visual(Path(data), Path(run_dir), "train.strategy=fsdp", f"data.cache_features={cache}")
        assert ("model_dir" in summary) == (rank == 0)  # rank 0 alone exports


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from rwkv_mm.vision.synth import build_synthetic_visual

    data = tmp_path_factory.mktemp("visual_fsdp") / "synth"
    build_synthetic_visual(data, n_train=16, n_eval=2)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["false", "true"])
def test_the_visual_runner_under_fsdp_exports_what_one_process_does(synth, tmp_path, cache):
    with single_threaded():
        one = run_visual(synth, tmp_path / "one", f"data.cache_features={cache}")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(synth), str(tmp_path / "fsdp"), cache), nprocs=2,
             join=True)
    for name in ("backbone.pth", "projector.pth"):
        single = read_state_dict(tmp_path / "one" / "model" / name)
        sharded = read_state_dict(tmp_path / "fsdp" / "model" / name)
        assert single.keys() == sharded.keys(), name
        for key, value in single.items():
            assert sharded[key].dtype == value.dtype and sharded[key].shape == value.shape, key
            torch.testing.assert_close(sharded[key], value, rtol=0, atol=2e-5, msg=f"{name}: {key}")
    # and what both wrote is the trained model, not the one they started from
    from rwkv_mm.runners.visual_rwkv import build_visual_model
    fresh = build_visual_model(load_recipe("visual/stage1_tiny", overrides(synth)).config)
    assert one["steps"] == 3
    assert not torch.equal(read_state_dict(tmp_path / "one" / "model" / "projector.pth")["weight"],
                           fresh.proj.weight.detach())
    assert not torch.equal(read_state_dict(tmp_path / "one" / "model" / "backbone.pth")["head.weight"],
                           fresh.rwkv.head.weight.detach())
    ckpt = torch.load(tmp_path / "fsdp" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["strategy"] == "fsdp" and ckpt["step"] == 3

