"""Memory per device of a training step: the model's states and the activations' peak.

States (what the trainer does: fp32 weights, bf16 autocast on CUDA, AdamW; no fp32 master copy is
needed because the weights themselves are fp32):

    weights   4 B/parameter                     FSDP: / N, plus the gathered ones (below)
    gradients 4 B/trainable parameter           FSDP: / N
    AdamW     8 B/trainable parameter (m, v)    FSDP: / N
    buffers   DDP: its gradient buckets, 4 B/trainable parameter (N > 1)
              FSDP2: the root unit (embedding, head, front ends, GoldFinch's key cache) stays
              gathered through the step, and two blocks are gathered at a time (the current and
              the prefetched one), with their unsharded gradients before the reduce-scatter

Activations: the traced step (`trace.StepTrace`) gives what each block and the rest keep for
backward per sequence. The peak is the larger of two moments:

- backward of the last block: everything kept, plus that block's backward temporaries
  (`BLOCK_TRANSIENT` of what it kept — fitted to peak memory measured on the CPU, see
  tests/planning/test_calibration.py). With grad_cp every block keeps only its inputs, and the
  block being recomputed holds all of its own again;
- the LM head: the plain path (train.loss_chunk 0) holds logits [n, V] in the compute dtype, the
  log-softmax (fp32, kept) and two fp32 gradients of that size (a third [n, V] for L2Wrap); the
  chunked path holds the hidden states' gradient [n, D] and the head weight's [V, D] (fp32) and
  one chunk's logits and softmax [C, V].
"""

from __future__ import annotations

from dataclasses import dataclass

from .trace import StepTrace

#: a block's backward temporaries, as a fraction of what it keeps (CPU measurements: Finch and
#: Eagle 0.15-0.16 at D 128-256, T 256-512; GoldFinch's top GOLD block less)
BLOCK_TRANSIENT = 0.16
ADAM_BYTES = 8  # exp_avg + exp_avg_sq, fp32


@dataclass
class HeadSpec:
    """The LM head a loss runs per sequence: `rows` positions reach it, vocabulary `vocab`, width
    `width`; `l2wrap`: the trainer's L2Wrap term applies; `trainable`: its weight trains."""

    rows: int
    vocab: int
    width: int
    l2wrap: bool
    trainable: bool


@dataclass
class Activations:
    """Peak activation memory of a micro-batch of B sequences: B·per_sample + fixed bytes,
    reached at `phase`."""

    per_sample: int
    fixed: int
    phase: str

    def at(self, micro_batch: int) -> int:
        return micro_batch * self.per_sample + self.fixed


def _head_bytes(head: HeadSpec | None, itemsize: int, loss_chunk: int) -> tuple[int, int, int]:
    """(kept per sequence, transient per sequence, fixed) bytes of the LM head and its loss."""
    if head is None:
        return 0, 0, 0
    n, V, D = head.rows, head.vocab, head.width
    if loss_chunk == 0:
        kept = n * D * itemsize + n * V * 4  # the head's input, the log-softmax
        transient = n * V * itemsize + 2 * n * V * 4 + (n * V * itemsize if head.l2wrap else 0)
        return kept, transient, 0
    kept = n * D * 4 + (n * D * itemsize + n * 12 if head.l2wrap else 0)  # grad_h; hidden, top-1
    chunk = min(loss_chunk, n)
    fixed = (V * D * 4 if head.trainable else 0) + (V * D * itemsize if itemsize != 4 else 0)
    return kept, 0, fixed + chunk * V * (4 + itemsize)


def activation_peak(trace: StepTrace, head: HeadSpec | None, *, bf16: bool, wkv_kernel: bool,
                    grad_cp: bool, loss_chunk: int) -> Activations:
    """The activation peak of a training step (module docstring) for a run in bf16 autocast or
    fp32, with the CUDA WKV kernel or the chunked form, with or without grad_cp."""
    outside, blocks = trace.saved_by_block(bf16, wkv_kernel)
    itemsize = 2 if bf16 else 4
    head_kept, head_transient, head_fixed = _head_bytes(head, itemsize, loss_chunk)
    largest = max(blocks, default=0)
    kept = outside + head_kept + (sum(trace.block_inputs) if grad_cp else sum(blocks))
    in_block = kept + int(largest * ((1.0 if grad_cp else 0.0) + BLOCK_TRANSIENT))
    at_head = kept + head_transient
    if at_head > in_block:
        return Activations(at_head, head_fixed, "LM head")
    return Activations(in_block, head_fixed, "recomputed block" if grad_cp else "last block")


@dataclass
class ParamCounts:
    """Parameters: all and trainable, in the blocks (each, FSDP's units) and in the rest."""

    total: int
    trainable: int
    largest_block: int
    largest_block_trainable: int
    root: int
    root_trainable: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


@dataclass
class StateMemory:
    """Bytes per device of the model's states (module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    buffers: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.buffers


def state_memory(params: ParamCounts, strategy: str, world: int) -> StateMemory:
    """Weights, gradients, AdamW state and the strategy's buffers per device."""
    P, Pt = params.total, params.trainable
    if world <= 1:
        return StateMemory(4 * P, 4 * Pt, ADAM_BYTES * Pt, 0)
    if strategy == "ddp":
        return StateMemory(4 * P, 4 * Pt, ADAM_BYTES * Pt, 4 * Pt)
    shard = lambda n: -(-n // world)  # noqa: E731 — ceil(n / world)
    gathered = 4 * (params.root - shard(params.root)) + 2 * 4 * params.largest_block
    unsharded_grads = 4 * params.root_trainable + 4 * params.largest_block_trainable
    return StateMemory(4 * shard(P), 4 * shard(Pt), ADAM_BYTES * shard(Pt), gathered + unsharded_grads)


def largest_micro_batch(budget: int, states: StateMemory, act: Activations, limit: int) -> int:
    """The largest micro-batch (at most `limit`) whose states and activations fit `budget` bytes;
    0 when not even one sequence does."""
    room = budget - states.total - act.fixed
    if act.per_sample <= 0:
        return limit if room >= 0 else 0
    return max(0, min(limit, room // act.per_sample))
