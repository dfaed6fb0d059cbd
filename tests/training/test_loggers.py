"""Run records: tokens/s, step time, peak memory and (with a known peak) MFU in metrics.jsonl and
the progress bar; TensorBoard event files in the run folder (fresh runs start them anew, a resume
drops the redone steps); Weights & Biases only when asked, through a fake module (never the
network); the loggers' files are run outputs (`--overwrite` removes them)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from rwkv_mm.errors import ConfigError, UserError
from rwkv_mm.planning.flops import FlopMeter
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.plot import read_metrics
from rwkv_mm.training.run_dir import classify
from rwkv_mm.training.trainer import Trainer
from training.toy_run import TOY_TRAIN, collate, make_dataset, make_model


def fit(run_dir, resume=False, **train):
    cfg = TrainConfig(**{**TOY_TRAIN, "max_steps": 4, **train})
    trainer = Trainer(make_model(), cfg, run_dir, make_dataset(), collate, device="cpu")
    trainer.fit(resume=resume)
    return trainer


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_records_have_throughput_memory_and_mfu_with_a_given_peak(tmp_path):
    fit(tmp_path, peak_tflops=0.5)
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["step_s"] > 0 and r["peak_mem_gb"] > 0.05  # the process's RSS
        assert 0 < r["mfu"] < 1 and r["tflops"] == pytest.approx(r["mfu"] * 0.5)
    # MFU's FLOPs are the model FLOPs of a step, counted independently here
    model, data = make_model(), make_dataset()
    batch = collate(data[:2])
    with FlopMeter() as meter:
        logits, _ = model(batch["input_ids"])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-100).backward()
    step_flops = 2 * meter.total  # two micro-batches of 2 per step
    r = rows[-1]
    assert r["tflops"] * 1e12 * r["step_s"] == pytest.approx(step_flops, rel=1e-6)


def test_no_mfu_on_a_cpu_without_a_given_peak(tmp_path):
    fit(tmp_path)
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert all("mfu" not in r and "tokens_per_s" in r for r in rows)


def test_tensorboard_event_files_fresh_runs_and_resume(tmp_path):
    fit(tmp_path)
    events = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1
    curves = scalars(tmp_path)
    assert [s for s, _ in curves["loss"]] == [1, 2, 3, 4]
    assert {"lr", "grad_norm", "tokens_per_s", "step_s", "peak_mem_gb"} <= set(curves)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [v for _, v in curves["loss"]] == pytest.approx(losses)
    # resume from step 4 to 6: one curve, steps 1..6, nothing twice
    fit(tmp_path, resume=True, max_steps=6)
    assert [s for s, _ in scalars(tmp_path)["loss"]] == [1, 2, 3, 4, 5, 6]
    # a fresh run in the folder starts its curves anew
    fit(tmp_path, max_steps=2)
    assert [s for s, _ in scalars(tmp_path)["loss"]] == [1, 2]
    # the event files are run outputs (what --overwrite removes), W&B's folder too
    outputs, foreign = classify(tmp_path)
    assert all(e in outputs for e in tmp_path.glob("events.out.tfevents.*")) and not foreign
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "run-x.log").write_text("x")
    assert tmp_path / "wandb" / "run-x.log" in classify(tmp_path)[0]


def test_jsonl_only(tmp_path):
    fit(tmp_path, loggers=["jsonl"])
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert (tmp_path / "metrics.jsonl").is_file()


@pytest.mark.parametrize("loggers", [["tensorboard"], ["jsonl", "jsonl"], ["jsonl", "mlflow"], "jsonl"])
def test_loggers_setting_is_checked(loggers):
    with pytest.raises(ConfigError, match="loggers"):
        TrainConfig(loggers=loggers)
    with pytest.raises(ConfigError, match="peak_tflops"):
        TrainConfig(peak_tflops=-1)


def test_wandb_missing_is_a_user_error_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(UserError, match="train.loggers") as err:
        fit(tmp_path, loggers=["jsonl", "wandb"])
    assert "pip install wandb" in str(err.value)


class FakeRun:
    def __init__(self, calls: list, run_id: str | None) -> None:
        self.calls, self.id = calls, run_id or "fake123"

    def log(self, values: dict, step: int) -> None:
        self.calls.append(("log", step, dict(values)))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_wandb_gets_every_record_and_resumes_its_run(tmp_path, monkeypatch):
    calls: list = []
    fake = types.ModuleType("wandb")

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun(calls, kwargs.get("id"))

    fake.init = init
    monkeypatch.setitem(sys.modules, "wandb", fake)
    fit(tmp_path, loggers=["jsonl", "wandb"])
    init_kwargs = calls[0][1]
    assert init_kwargs["dir"] == str(tmp_path) and init_kwargs["config"]["max_steps"] == 4
    assert init_kwargs["id"] is None
    logged = [c for c in calls if c[0] == "log"]
    assert [c[1] for c in logged if "loss" in c[2]] == [1, 2, 3, 4]
    assert calls[-1] == ("finish",)
    calls.clear()
    fit(tmp_path, resume=True, max_steps=5, loggers=["jsonl", "wandb"])
    assert calls[0][1]["id"] == "fake123" and calls[0][1]["resume"] == "allow"


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str, strategy: str) -> None:
    from rwkv_test_utils import gloo_process_group

    with gloo_process_group(rank, world, init_file):
        fit(Path(out_dir), peak_tflops=0.5, strategy=strategy, micro_batch_size=1)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_mfu_under_two_gloo_processes(tmp_path, strategy):
    """The first step is counted under DDP and FSDP2 too; each process's FLOPs are its share."""
    import torch.multiprocessing as mp

    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), str(out), strategy), nprocs=2, join=True)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # rank 0 alone writes
    model, batch = make_model(), collate(make_dataset()[:2])
    with FlopMeter() as meter:
        logits, _ = model(batch["input_ids"])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten()).backward()
    for r in rows:  # a step is 2 micro-batches of 1 per process: one micro-batch of 2 sequences' FLOPs
        assert r["tflops"] * 1e12 * r["step_s"] == pytest.approx(meter.total, rel=1e-6)
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
