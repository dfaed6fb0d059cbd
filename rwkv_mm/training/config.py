"""Settings of the shared trainer (the `train:` section of every recipe)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rwkv_mm.errors import ConfigError, check_choice, check_float, check_int

from .peft_config import PeftConfig

PRECISIONS = ("auto", "bf16", "fp32")
#: train.loss_chunk's default: 1024 positions × V = 65536 is 256 MiB of fp32 logits at a time,
#: and a [1024, D] × [D, V] product still runs at full matmul speed (GPU and CPU)
DEFAULT_LOSS_CHUNK = 1024
STRATEGIES = ("ddp", "fsdp")
#: train.loggers' choices: metrics.jsonl (always: loss.png and resume read it), TensorBoard event
#: files in the run folder, Weights & Biases (opt-in, needs the wandb package)
LOGGERS = ("jsonl", "tensorboard", "wandb")


@dataclass
class TrainConfig:
    """How a stage trains. Defaults follow the paper's App. H where it says anything.

    Attributes:
        max_steps: optimizer steps in the stage.
        batch_size: global batch, in sequences per optimizer step (across processes).
        micro_batch_size: sequences per forward pass per process; 0 means batch_size / world size.
            Gradient accumulation steps = batch_size / (micro_batch_size · world size).
        lr, lr_final: peak learning rate and the floor the cosine decays to.
        warmup_steps: linear warmup from 0 to lr.
        weight_decay: applied only to 2-D Linear/Embedding weights.
        decay_lr_scale: learning-rate multiplier of the decay parameters (time_decay*).
        betas, adam_eps: AdamW settings.
        grad_clip: max global gradient norm (0 = off).
        precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16".
        freeze: fnmatch patterns of parameter names to freeze (e.g. "emb.*").
        train_only: when non-empty, only parameters matching one of these patterns train.
        l2wrap: RWKV-LM's L2Wrap loss term that keeps the largest logits bounded.
        eval_every, eval_batches: periodic validation (eval_every 0 = never).
        save_every: checkpoint interval in steps (the last step is always saved).
        log_every: progress/metrics interval in steps.
        seed: seeds model init, data order and dropout.
        strategy: under torchrun, "ddp" (replicated weights) or "fsdp" (FSDP2: parameters,
            gradients and optimizer state sharded over processes, for models that don't fit).
        skip_nonfinite: how many steps with a non-finite loss or gradient norm to tolerate (their
            optimizer step is skipped and logged); one more stops training with an error.
        grad_cp: activation checkpointing: every residual block keeps only its inputs for
            backward and is run again there (~1/3 more compute, far less activation memory;
            RWKV-LM's --grad_cp 1). For models whose blocks support it (every backbone family,
            the audio encoder, VisualRWKV's LM).
        loss_chunk: the LM head and its cross entropy (and L2Wrap) run over this many positions
            at a time, so the [positions, vocabulary] logits never exist whole (same loss and
            gradients); 0 = the plain path (all logits at once). For loss functions built on
            `lm_head_loss.head_loss` (language models, VisualRWKV).
        num_workers: processes that read and collate training and evaluation batches ahead of
            the step that uses them (0 = read in the training process); the batches are the same
            for any number. Pinned memory on CUDA.
        prefetch: micro-batches each worker prepares ahead (with num_workers > 0).
        loggers: where the records go (rank 0): "jsonl" (metrics.jsonl, required), "tensorboard"
            (event files in the run folder), "wandb" (Weights & Biases; WANDB_PROJECT names the
            project, default rwkv-mm). Every record has tokens/s, seconds per step, peak memory
            and, when the device's peak FLOP/s is known, MFU (`rwkv_mm.training.loggers`).
        peak_tflops: the device's dense peak in TFLOP/s for MFU; 0 = the table of common GPUs
            (`rwkv_mm.planning.devices`; H100/H200 bf16 989, A100 312), none on a CPU.
        peft: adapters (LoRA, PiSSA, DoRA through Hugging Face `peft`) instead of full
            fine-tuning; null = full fine-tuning (`PeftConfig`).
        state_tuning: freeze every weight and train each layer's initial WKV state (RWKV-PEFT's
            state tuning; saved as `blocks.{i}.att.time_state`).
        state_tuning_shift: with state_tuning, also train the token-shift states.
        segment_len: a sample longer than this is trained in segments of this many positions,
            the recurrent state (WKV + token shift) passed between them with gradients through
            it, so activation memory is bounded by segment_len; 0 = whole sequences.

    Every field is checked on construction (`ConfigError` naming the field; the recipe reader
    adds the dotted key and the file).
    """

    max_steps: int = 1000
    batch_size: int = 8
    micro_batch_size: int = 0
    lr: float = 6e-4
    lr_final: float = 6e-5
    warmup_steps: int = 10
    weight_decay: float = 1e-3
    decay_lr_scale: float = 2.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "auto"
    freeze: list[str] = field(default_factory=list)
    train_only: list[str] = field(default_factory=list)
    l2wrap: bool = True
    eval_every: int = 100
    eval_batches: int = 20
    save_every: int = 200
    log_every: int = 10
    seed: int = 0
    strategy: str = "ddp"
    skip_nonfinite: int = 0
    grad_cp: bool = False
    loss_chunk: int = DEFAULT_LOSS_CHUNK
    num_workers: int = 0
    prefetch: int = 2
    loggers: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    peak_tflops: float = 0.0
    peft: PeftConfig | None = None
    state_tuning: bool = False
    state_tuning_shift: bool = False
    segment_len: int = 0

    def __post_init__(self) -> None:
        check_int(self, "max_steps", min=1)
        check_int(self, "batch_size", min=1)
        check_int(self, "micro_batch_size", min=0, max=self.batch_size)
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError("micro_batch_size", self.micro_batch_size,
                              f"a divisor of batch_size ({self.batch_size})")
        check_float(self, "lr", gt=0)
        check_float(self, "lr_final", min=0)
        check_int(self, "warmup_steps", min=0)
        check_float(self, "weight_decay", min=0)
        check_float(self, "decay_lr_scale", min=0)
        betas = self.betas
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                        for b in betas)):
            raise ConfigError("betas", betas, "two numbers in [0, 1)")
        check_float(self, "adam_eps", gt=0)
        check_float(self, "grad_clip", min=0)
        check_choice(self, "precision", PRECISIONS)
        for name in ("freeze", "train_only"):
            patterns = getattr(self, name)
            if not (isinstance(patterns, (list, tuple)) and all(isinstance(p, str) and p for p in patterns)):
                raise ConfigError(name, patterns, "a list of parameter-name patterns")
        if not isinstance(self.l2wrap, bool):
            raise ConfigError("l2wrap", self.l2wrap, "true or false")
        check_int(self, "eval_every", min=0)
        check_int(self, "eval_batches", min=1)
        check_int(self, "save_every", min=0)
        check_int(self, "log_every", min=1)
        check_int(self, "seed", min=0)
        check_choice(self, "strategy", STRATEGIES)
        check_int(self, "skip_nonfinite", min=0)
        if not isinstance(self.grad_cp, bool):
            raise ConfigError("grad_cp", self.grad_cp, "true or false")
        check_int(self, "loss_chunk", min=0)
        check_int(self, "num_workers", min=0)
        check_int(self, "prefetch", min=1)
        loggers = self.loggers
        if not (isinstance(loggers, (list, tuple)) and all(isinstance(x, str) for x in loggers)
                and set(loggers) <= set(LOGGERS) and "jsonl" in loggers and len(set(loggers)) == len(loggers)):
            raise ConfigError("loggers", loggers, f"a list of {', '.join(LOGGERS)} without repeats, with jsonl "
                                                  "(metrics.jsonl is the run's record: loss.png and resume read it)")
        check_float(self, "peak_tflops", min=0)
        for name in ("state_tuning", "state_tuning_shift"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "true or false")
        if self.state_tuning_shift and not self.state_tuning:
            raise ConfigError("state_tuning_shift", True, "only with state_tuning: true")
        if self.state_tuning and self.peft is not None:
            raise ConfigError("state_tuning", True, "either state_tuning or peft, not both (set one of them off)")
        check_int(self, "segment_len", min=0)
