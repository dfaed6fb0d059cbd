"""Settings of the shared trainer (the `train:` section of every recipe)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        eval_every, eval_batches: periodic validation (0 = never).
        save_every: checkpoint interval in steps (the last step is always saved).
        log_every: progress/metrics interval in steps.
        seed: seeds model init, data order and dropout.
        strategy: under torchrun, "ddp" (replicated weights) or "fsdp" (FSDP2: parameters,
            gradients and optimizer state sharded over processes, for models that don't fit).
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
