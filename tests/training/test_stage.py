"""The runner shape (issue 14 item 2): a stage class setup -> fit -> export driven by
`run_stage`, registered with the files it writes, which run folders collect from the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from torch import nn

from rwkv_mm.backbone import temp_files_of
from rwkv_mm.runners import get_runner, list_runners, register_stage, unregister_runner
from rwkv_mm.training.config import TrainConfig
from rwkv_mm.training.distributed import gather_full_model, rank_and_world
from rwkv_mm.training.run_dir import TRAINER_OUTPUTS, classify, run_outputs
from rwkv_mm.training.stage import run_stage, write_summary
from rwkv_mm.training.trainer import Trainer
from rwkv_test_utils import single_threaded
from training.toy_run import collate, make_dataset, make_model

RUNNER = "toy_stage"


@dataclass
class ToyStageConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=3, batch_size=2, eval_every=0,
                                                                   save_every=3, log_every=1, warmup_steps=0))


class ToyStage:
    """Fits the toy LM; exports `weights/model.txt` and the number of steps it saw."""

    def __init__(self, cfg: ToyStageConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir, self.seen = cfg, run_dir, []

    def setup(self) -> Trainer:
        self.trainer = Trainer(self.build_model(), self.cfg.train, self.run_dir, make_dataset(), collate,
                               device="cpu")
        return self.trainer

    def build_model(self) -> nn.Module:
        return make_model()

    def on_step(self, trainer: Trainer, record: dict) -> None:
        self.seen.append(trainer.step)

    def export(self, model: nn.Module) -> dict:
        assert model is self.trainer.model  # one process: the trained model itself
        (self.run_dir / "weights").mkdir(exist_ok=True)
        (self.run_dir / "weights" / "model.txt").write_text(str(sum(p.numel() for p in model.parameters())))
        return {"seen": self.seen}


@pytest.fixture()
def toy_stage():
    cls = register_stage(RUNNER, config=ToyStageConfig, description="tests: a stage class",
                         outputs=("weights/*.txt",))(ToyStage)
    yield cls
    unregister_runner(RUNNER)


def test_a_stage_class_is_set_up_fitted_and_exported(toy_stage, tmp_path):
    runner = get_runner(RUNNER)
    assert runner.outputs == ("weights/*.txt",) and runner.fn is toy_stage.run
    with single_threaded():
        summary = runner.fn(ToyStageConfig(), tmp_path, False)
    assert summary["steps"] == 3 and summary["seen"] == [1, 2, 3]
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert (tmp_path / "weights" / "model.txt").read_text().isdigit()


def test_run_folders_collect_the_outputs_runners_declare(toy_stage, tmp_path):
    assert "weights/*.txt" in run_outputs() and set(TRAINER_OUTPUTS) <= set(run_outputs())
    for runner in list_runners():  # the shipped runners declare their own files
        if runner.name in ("lm_music", "visual_rwkv", "audio_tagging"):
            assert runner.outputs, runner.name
    for name in ("weights/a.txt", "weights/notes.md", "summary.json", "model/projector.pth"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    outputs, foreign = classify(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in outputs) == [
        "model/projector.pth", "summary.json", "weights/a.txt"]
    assert [p.relative_to(tmp_path).as_posix() for p in foreign] == ["weights/notes.md"]
    unregister_runner(RUNNER)
    assert "weights/*.txt" not in run_outputs()


def test_the_summary_is_written_atomically(tmp_path):
    path = write_summary(tmp_path, {"loss": 1.5, "path": tmp_path})
    assert json.loads(path.read_text()) == {"loss": 1.5, "path": str(tmp_path)}
    assert temp_files_of(path) == []


def test_gather_gives_the_model_itself_without_sharding(tmp_path):
    class One:
        sharded, rank, model = False, 0, make_model()

    assert gather_full_model(One, lambda: pytest.fail("no rebuild without FSDP")) is One.model
    One.rank = 1
    assert gather_full_model(One, make_model) is None


def test_run_stage_without_the_registry(tmp_path):
    with single_threaded():
        summary = run_stage(ToyStage(ToyStageConfig(), tmp_path))
    assert summary["seen"] == [1, 2, 3] and (tmp_path / "summary.json").is_file()


class _ExportHead(ToyStage):
    """Exports the head of the whole model it is handed (under FSDP: rebuilt and loaded on rank 0)."""

    def export(self, model: nn.Module) -> dict:
        import torch

        torch.save(model.head.weight.detach().clone(), self.run_dir / "head.pt")
        return {"exported_by": rank_and_world()[0]}


def _fsdp_stage_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from rwkv_test_utils import gloo_process_group

    with gloo_process_group(rank, world, init_file):
        cfg = ToyStageConfig()
        cfg.train.strategy, cfg.train.micro_batch_size = "fsdp", 1
        summary = run_stage(_ExportHead(cfg, Path(out_dir)))
        assert ("exported_by" in summary) == (rank == 0)


def test_under_fsdp_the_stage_exports_the_gathered_model_on_rank_0_only(tmp_path):
    """The one gather every runner uses (visual included): the shards of all processes are
    loaded into a fresh `build_model()` on rank 0, which alone exports and writes the summary."""
    import torch
    import torch.multiprocessing as mp

    cfg = ToyStageConfig()
    cfg.train.micro_batch_size = 1
    with single_threaded():
        run_stage(_ExportHead(cfg, tmp_path / "single"))
    (tmp_path / "fsdp").mkdir()
    mp.spawn(_fsdp_stage_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "fsdp")), nprocs=2, join=True)
    assert json.loads((tmp_path / "fsdp" / "summary.json").read_text())["exported_by"] == 0
    torch.testing.assert_close(torch.load(tmp_path / "fsdp" / "head.pt"), torch.load(tmp_path / "single" / "head.pt"),
                               rtol=0, atol=1e-6)
