"""A train.peft stage under FSDP: two gloo processes train a tiny VisualRWKV stage 2 with LoRA
(projector kept); `run_stage` rebuilds the model WITH its adapters on rank 0 to take the gathered
state, writes the adapter folder and the merged model/ — equal to a one-process run's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rwkv_mm.backbone import read_state_dict
from rwkv_test_utils import gloo_process_group, single_threaded
from training.test_visual_fsdp_export import run_visual

PEFT = ("train.peft.r=4", "train.peft.alpha=8", "train.peft.modules_to_save=[proj]", "train.lr=1e-2")


def _worker(rank: int, world: int, init_file: str, data: str, run_dir: str) -> None:
    with gloo_process_group(rank, world, init_file):
        summary = run_visual(Path(data), Path(run_dir), *PEFT, "train.strategy=fsdp")
        assert ("adapter" in summary) == (rank == 0)  # rank 0 alone exports


@pytest.mark.slow
def test_a_lora_stage_under_fsdp_exports_what_one_process_does(tmp_path):
    from rwkv_mm.vision.synth import build_synthetic_visual

    data = tmp_path / "synth"
    build_synthetic_visual(data, n_train=16, n_eval=2)
    with single_threaded():
        one = run_visual(data, tmp_path / "one", *PEFT)
    assert one["adapter"] == str(tmp_path / "one" / "adapter")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(data), str(tmp_path / "fsdp")), nprocs=2, join=True)
    for name in ("model/backbone.pth", "model/projector.pth", "adapter/adapter_model.safetensors"):
        single = read_state_dict(tmp_path / "one" / name)
        sharded = read_state_dict(tmp_path / "fsdp" / name)
        assert single.keys() == sharded.keys(), name
        for key, value in single.items():
            torch.testing.assert_close(sharded[key], value, rtol=0, atol=2e-5, msg=f"{name}: {key}")
    adapter = read_state_dict(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())  # it trained
