"""The trainer every runner uses.

AdamW with the paper's parameter groups, warmup + cosine, gradient accumulation and clipping,
bf16 autocast on CUDA (fp32 on CPU), freezing by name patterns, periodic evaluation, atomic
checkpoints that resume exactly, a progress bar, metrics in JSONL and a loss-curve PNG.
Runs under torchrun (DDP; gloo on CPU, NCCL on GPU) with the same global batch semantics.
Its parts: `freezing` (which parameters train), `distributed` (wrapping, whole states under
FSDP), `nonfinite` (NaN/inf steps and weights), `step_logs` (JSONL logs on fresh start/resume),
`segments` (`train.segment_len`: long samples segment by segment through the recurrent state).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rwkv_mm.backbone import param_groups, set_grad_checkpointing
from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.errors import UserError

from .checkpoint import atomic_torch_save, load_training_checkpoint, rng_state, set_rng_state
from .config import TrainConfig
from .data_loading import BatchStream, check_workers, eval_batches, train_tasks
from .data_order import DataPosition, EpochOrder
from .distributed import (all_reduce_sum, full_model_state, full_optimizer_state, load_full_states,
                          maybe_init_distributed, rank_and_world, wrap_model)
from .freezing import apply_freezing, set_trainable
from .l2wrap import l2wrap
from .lm_head_loss import head_loss_options, lm_loss
from .loggers import RunLoggers, StepMeter
from .nonfinite import check_finite_weights, nonfinite_step
from .notices import warn
from .plot import plot_metrics
from .run_dir import confirm_resumed
from .schedule import lr_at
from .segments import grad_sync, segment_backward
from .step_logs import append_record, reset_step_logs, truncate_step_logs

__all__ = ["IGNORE_INDEX", "Batch", "LossFn", "lm_loss", "Trainer", "apply_freezing",
           "maybe_init_distributed"]  # the last two: kept importable from here for callers

Batch = dict[str, Any]
# loss_fn(model, batch) -> (sum of token losses, number of target tokens, logits or None)
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


class Trainer:
    """Trains `model` on `train_set` (a map-style dataset) batched by `collate`.

    Args:
        model: the module to train (its parameters' names drive freezing and param groups).
        cfg: the recipe's `train:` section.
        run_dir: where checkpoints (`checkpoints/last.pt`), `metrics.jsonl` and `loss.png` go.
        train_set, collate: samples and how to batch them: collate(list of samples) -> dict with
            at least `targets` [B, T] (-100 = no loss) and whatever `loss_fn` reads.
        eval_set: optional validation samples, evaluated every `cfg.eval_every` steps.
        loss_fn: `(model, batch) -> (loss_sum, n_tokens, logits|None)`; default next-token LM loss
            (`lm_head_loss.lm_loss`). Logits it returns get the trainer's L2Wrap; loss functions
            built on `head_loss` apply L2Wrap themselves (chunked) and return None.
        device: default CUDA when available, else CPU.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, run_dir: str | Path, train_set,
                 collate: Callable[[list], Batch], eval_set=None, loss_fn: LossFn = lm_loss,
                 device: str | torch.device | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.train_set, self.eval_set, self.collate, self.loss_fn = train_set, eval_set, collate, loss_fn
        self.rank, self.world = rank_and_world()
        self.device = torch.device(device or (f"cuda:{torch.cuda.current_device()}"
                                              if torch.cuda.is_available() else "cpu"))
        micro = cfg.micro_batch_size or cfg.batch_size // self.world
        if micro < 1 or cfg.batch_size % (micro * self.world):
            raise UserError(f"train.batch_size={cfg.batch_size} must be a multiple of "
                            f"micro_batch_size ({micro or cfg.micro_batch_size}) × processes ({self.world})",
                            where="train.batch_size", fix="change train.batch_size or train.micro_batch_size")
        self.micro_batch = micro
        self.model = model.to(self.device)
        self.param_counts = set_trainable(model, cfg)  # state tuning, adapters, freeze patterns
        if self.param_counts["trainable"] == 0:
            raise UserError("nothing to train: every parameter is frozen",
                            where="train.freeze/train.train_only", fix="check the patterns")
        if set_grad_checkpointing(model, cfg.grad_cp) == 0 and cfg.grad_cp:
            raise UserError(f"train.grad_cp=true, but {type(model).__name__} runs no blocks that can "
                            "recompute their activations", where="train.grad_cp", fix="set train.grad_cp: false")
        # FSDP2 shards `model` in place (each block, then the rest); DDP wraps it
        self.wrapped, self.sharded = wrap_model(model, cfg.strategy, self.device)
        self.optimizer = torch.optim.AdamW(
            param_groups(model, cfg.lr, cfg.weight_decay, cfg.decay_lr_scale),
            lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)
        self.order = EpochOrder(len(train_set), cfg.seed)  # its position: after the last step taken
        check_workers(train_set, cfg.num_workers)
        check_workers(eval_set, cfg.num_workers)
        self.loading = dict(num_workers=cfg.num_workers, prefetch=cfg.prefetch,
                            pin_memory=self.device.type == "cuda")
        self._batches: BatchStream | None = None  # opened at the first step, from self.order's position
        self.step = 0
        self.skipped_steps = 0  # steps whose loss or gradient norm was not finite (train.skip_nonfinite)
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 \
            else contextlib.nullcontext
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        # JSONL logs keyed by "step": cut back to the checkpoint on resume, emptied on a fresh start
        # (a runner adds its own, e.g. the audio runner's map.jsonl).
        self.step_logs: list[Path] = [self.metrics_path]
        # train.segment_len: long samples segment by segment through the state (None: whole)
        self.segments = segment_backward(cfg.segment_len, self.model, self.wrapped, self.sharded, loss_fn,
                                         self.autocast)

    # ----------------------------------------------------------------------------- checkpoints
    def full_model_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole (unsharded) model state dict. Under FSDP every process must call it (it
        gathers the shards) and only rank 0 receives the tensors (on the CPU; others get {})."""
        return full_model_state(self.model, self.sharded)

    def save_checkpoint(self) -> None:
        """Write model, optimizer, step, data position and RNG states (rank 0, atomically).

        Weights that are not finite are never written: a `UserError` naming the step instead."""
        model_sd = self.full_model_state_dict()
        optim_sd = full_optimizer_state(self.model, self.optimizer, self.sharded)
        check_finite_weights(model_sd, self.step, self.run_dir, all_reduce_sum, self.device)
        if self.rank != 0:
            return
        atomic_torch_save({
            "model": model_sd,
            "optimizer": optim_sd,
            "strategy": "fsdp" if self.sharded else "plain",  # what wrote it; any strategy resumes it
            "world": self.world,
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "data": dataclasses.asdict(self.order.position),
            "rng": rng_state(),
            "train_config": dataclasses.asdict(self.cfg),
        }, self.checkpoint_path)

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        """Restore everything `save_checkpoint` wrote; training then continues exactly."""
        ckpt = load_training_checkpoint(Path(path) if path else self.checkpoint_path)
        try:  # whole states: any strategy (ddp, fsdp) and world size wrote them, any takes them
            load_full_states(self.model, self.optimizer, ckpt, self.sharded)
        except (RuntimeError, ValueError, KeyError) as err:  # other shapes, names or groups
            detail = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
            raise UserError(f"the checkpoint does not fit this model ({detail[:300]})",
                            where=str(path or self.checkpoint_path),
                            fix="resume with the settings the run was started with (its config.yaml)") from None
        self.step = int(ckpt["step"])
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        self.order.position = DataPosition(**ckpt["data"])
        self.close()  # the batches fetched ahead came from the old position
        set_rng_state(ckpt["rng"])

    # ----------------------------------------------------------------------------- steps
    def train_step(self) -> dict[str, Any]:
        """One optimizer step over a global batch. Returns loss (token-weighted mean), lr,
        gradient norm and tokens.

        A non-finite loss or gradient norm skips the optimizer step (the returned record has a
        `skipped` reason) while fewer than `train.skip_nonfinite` steps were skipped; otherwise
        it is a `UserError` naming the step. Every process takes the same decision (the loss is
        all-reduced and the gradients are synchronised)."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        batches = self._step_batches()
        # Global counts first, so that every micro-batch's loss is weighted by its share of
        # the global batch's target tokens (identical for any split across processes/micro-batches).
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        for b in batches:
            counts[0] += (b["targets"] != IGNORE_INDEX).sum()
            counts[1] += b["targets"].numel()
        n_tokens, n_positions = all_reduce_sum(counts).clamp(min=1).unbind()
        loss_total = torch.zeros((), dtype=torch.float64, device=self.device)
        # L2Wrap's divisor: this process's share of the global batch's positions (RWKV-LM's B·T)
        # (not rounded: an odd global count under DDP gives the same gradient as one process)
        l2wrap_positions = max(float(n_positions) / self.world, 1.0) if cfg.l2wrap else 0.0

        def weigh(loss_sum: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
            # DDP averages gradients over processes: scale by world to get the global sum.
            scaled = loss_sum.float() * (self.world / n_tokens.float())
            if cfg.l2wrap and logits is not None:  # a loss function that returns its logits
                scaled = l2wrap(scaled, logits, l2wrap_positions)
            return scaled

        self.model.train()
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1
            if self.segments is not None:  # train.segment_len: forward and backward per segment
                with head_loss_options(cfg.loss_chunk, l2wrap_positions):
                    loss_total += self.segments.backward(batch, weigh, sync)
                continue
            with grad_sync(self.model, self.wrapped, self.sharded, sync):
                with self.autocast(), head_loss_options(cfg.loss_chunk, l2wrap_positions):
                    loss_sum, _, logits = self.loss_fn(self.wrapped, batch)
                weigh(loss_sum, logits).backward()
            loss_total += loss_sum.detach().double()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # max_norm inf (grad_clip 0) only measures: the gradients are multiplied by exactly 1.
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0
                                                         else float("inf")))
        loss = float(all_reduce_sum(loss_total) / n_tokens)
        record: dict[str, Any] = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": float(n_tokens)}
        reason = nonfinite_step(loss, grad_norm, self.step + 1, self.skipped_steps, cfg.skip_nonfinite,
                                self.run_dir)
        if reason is not None:
            self.skipped_steps += 1
            record["skipped"] = reason
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return record

    def _step_batches(self) -> list[Batch]:
        """This process's micro-batches of the next global batch, on the device (read by the data
        workers); the data position a checkpoint records moves past them as they are taken."""
        if self._batches is None:
            cfg = self.cfg
            tasks = train_tasks(len(self.train_set), cfg.seed, self.order.position, cfg.batch_size, self.rank,
                                self.world, self.micro_batch)
            self._batches = BatchStream(self.train_set, self.collate, tasks, **self.loading)
        batches, self.order.position = self._batches.next_step()
        return [_to_device(b, self.device) for b in batches]

    def close(self) -> None:
        """Stop the data workers (a next step starts them again, from the position reached)."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-weighted mean loss over the first `eval_batches` micro-batches of eval_set."""
        if self.eval_set is None or len(self.eval_set) == 0:
            return None
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        n = min(len(self.eval_set), self.cfg.eval_batches * self.micro_batch)
        with eval_batches(self.eval_set, self.collate, n, self.micro_batch, self.cfg.seed,
                          **self.loading) as batches:
            for batch in batches:
                with self.autocast(), head_loss_options(self.cfg.loss_chunk):
                    loss_sum, n_tok, _ = self.loss_fn(self.model, _to_device(batch, self.device))
                total += loss_sum.double()
                count += n_tok
        if float(count) == 0:  # no target tokens: there is no loss to report (not 0.0)
            return None
        return float(total / count)

    # ----------------------------------------------------------------------------- loop
    def _log(self, record: dict[str, Any]) -> None:
        """One record to the run's sinks (train.loggers; outside `fit`: metrics.jsonl), rank 0."""
        if self.rank == 0:
            loggers = getattr(self, "_loggers", None)
            if loggers is not None:
                loggers.log(record)
            else:
                append_record(self.metrics_path, record)

    def fit(self, resume: bool = False,
            on_step: Callable[["Trainer", dict[str, float]], None] | None = None) -> dict[str, Any]:
        """Train to `cfg.max_steps`. With `resume`, continue from `checkpoints/last.pt`.

        Returns a summary: steps, final train loss, final validation loss, wall time, paths."""
        from tqdm import tqdm

        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_checkpoint()
            if self.rank == 0:
                truncate_step_logs(self.step_logs, self.step)
                confirm_resumed(self.run_dir)  # the run folder may now take the new config.yaml
                if self.step >= cfg.max_steps:
                    warn(f"{self.checkpoint_path} is at step {self.step}, train.max_steps={cfg.max_steps}: "
                         "nothing left to train (raise train.max_steps to go on)")
        elif self.rank == 0:
            reset_step_logs(self.step_logs)
        if not resume:  # a resumed run restores every RNG state from the checkpoint instead
            torch.manual_seed(cfg.seed)
        start_time, last = time.perf_counter(), {}
        meter = StepMeter(self.device, cfg.peak_tflops)  # tokens/s, s/step, peak memory, MFU per window
        val_loss = None
        with (contextlib.closing(self),  # the data workers stop on errors, Ctrl-C and at the end
              RunLoggers(self.run_dir, cfg.loggers, self.metrics_path, self.step if resume else None,
                         dataclasses.asdict(cfg), active=self.rank == 0) as self._loggers,
              tqdm(total=cfg.max_steps, initial=self.step, disable=self.rank != 0, dynamic_ncols=True,
                   desc=f"train {self.run_dir.name}", unit="step") as bar):  # closed (a newline) on errors too
            while self.step < cfg.max_steps:
                with meter.step():  # the first step's FLOPs are counted (for MFU)
                    last = self.train_step()
                meter.add(last["tokens"])
                if on_step:
                    on_step(self, last)
                done = self.step == cfg.max_steps
                if "skipped" in last:
                    self._log({"step": self.step, "skipped": last["skipped"], "lr": last["lr"]})
                    if self.rank == 0:
                        bar.write(f"step {self.step}: skipped, {last['skipped']} "
                                  f"({self.skipped_steps} of train.skip_nonfinite={cfg.skip_nonfinite})")
                elif self.step % cfg.log_every == 0 or done:
                    figures = meter.window()
                    self._log({"step": self.step, "loss": last["loss"], "lr": last["lr"],
                               "grad_norm": last["grad_norm"], **figures,
                               "elapsed_s": time.perf_counter() - start_time})
                    bar.set_postfix({"loss": f"{last['loss']:.4f}", "lr": f"{last['lr']:.2e}", **meter.postfix(figures)})
                if cfg.eval_every > 0 and (self.step % cfg.eval_every == 0 or done):
                    val_loss = self.evaluate()
                    if val_loss is not None:
                        self._log({"step": self.step, "val_loss": val_loss})
                        if self.rank == 0:
                            bar.write(f"step {self.step}: val_loss {val_loss:.4f}")
                if (cfg.save_every > 0 and self.step % cfg.save_every == 0) or done:
                    self.save_checkpoint()
                    if self.rank == 0:
                        plot_metrics(self.metrics_path, self.run_dir / "loss.png")
                bar.update(1)
        return {"steps": self.step, "skipped_steps": self.skipped_steps,
                "train_loss": last.get("loss"), "val_loss": val_loss,
                "wall_s": round(time.perf_counter() - start_time, 2),
                "checkpoint": str(self.checkpoint_path), "metrics": str(self.metrics_path),
                "plot": str(self.run_dir / "loss.png")}
