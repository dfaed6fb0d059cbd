"""Training with train.peft: checkpoints resume exactly with adapters, and two gloo processes
(DDP, FSDP2) train exactly like one; bf16 autocast and grad_cp run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peft_test_utils import fit, logits, tiny, train_config
from rwkv_mm.training.peft_config import PeftConfig
from rwkv_test_utils import single_threaded


@pytest.mark.parametrize("method", ["lora", "pissa"])
def test_a_killed_run_resumes_exactly_with_adapters(tmp_path, method):
    peft = PeftConfig(method=method, r=4, alpha=8, dropout=0.1)  # dropout: the RNG state resumes too
    cfg = train_config(peft, max_steps=6, save_every=2)
    straight, t_straight = fit(tiny("6"), cfg, tmp_path / "a")

    def kill(trainer, _):
        if trainer.step == 3:
            raise KeyboardInterrupt  # after the checkpoint of step 2

    with pytest.raises(KeyboardInterrupt):
        fit(tiny("6"), cfg, tmp_path / "b", on_step=kill)
    resumed, t_resumed = fit(tiny("6"), cfg, tmp_path / "b", resume=True)
    assert resumed == straight[2:]
    for (name, a), (_, b) in zip(t_straight.model.state_dict().items(), t_resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_bf16_autocast_and_grad_cp_train_the_adapters(tmp_path):
    # Goose: Eagle/Finch's chunked CPU WKV fails under bf16 autocast today, with or without
    # adapters ("Input dtypes must be the same" in cuda/wkv_chunked.py's baddbmm_)
    model = tiny("7")
    losses, _ = fit(model, train_config(PeftConfig(method="dora", r=4), precision="bf16", grad_cp=True), tmp_path)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert torch.isfinite(logits(model)).all()


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str, strategy: str) -> None:
    from peft_test_utils import fit, tiny, train_config
    from rwkv_mm.training.peft_config import PeftConfig
    from rwkv_test_utils import gloo_process_group

    with gloo_process_group(rank, world, init_file):
        losses, trainer = fit(tiny("6"), train_config(PeftConfig(r=4, alpha=8, modules_to_save=["head"]),
                                                      micro_batch_size=1, strategy=strategy),
                              Path(out_dir) / "run")
        full = trainer.full_model_state_dict()  # collective under FSDP
        if rank == 0:
            torch.save({"losses": losses, "state": {k: v.detach() for k, v in full.items()}},
                       f"{out_dir}/result.pt")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_train_the_adapters_like_one(tmp_path, strategy):
    import torch.multiprocessing as mp

    with single_threaded():
        single, trainer = fit(tiny("6"), train_config(PeftConfig(r=4, alpha=8, modules_to_save=["head"])),
                              tmp_path / "single")
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), str(out), strategy), nprocs=2, join=True)
    result = torch.load(out / "result.pt", weights_only=True)
    assert result["losses"] == pytest.approx(single, rel=1e-5)
    state = trainer.model.state_dict()
    assert set(result["state"]) == set(state)  # adapter names kept under both strategies
    for name, p in state.items():
        torch.testing.assert_close(result["state"][name], p, rtol=1e-5, atol=2e-5, msg=name)
