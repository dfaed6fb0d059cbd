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
- the LM head: the plain path (train.loss_chunk 0) holds logits [n, V] in the compute dtype (until
  the step ends), the log-softmax (fp32, kept) and two fp32 gradients of that size (a third
  [n, V] for L2Wrap); the chunked path, at the end of the forward pass, the hidden states'
  gradient [n, D] and the head weight's [V, D] (fp32) and one chunk's logits and softmax [C, V]
  (measured against it too: tests/planning/test_calibration.py).
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
    """Activation memory of a micro-batch of B sequences at each moment that can be the peak:
    {moment: (bytes per sequence, bytes independent of B)}; the peak is the largest."""

    phases: dict[str, tuple[int, int]]

    def at(self, micro_batch: int) -> int:
        """Peak bytes of a micro-batch of `micro_batch` sequences."""
        return max(micro_batch * per + fixed for per, fixed in self.phases.values())

    def phase(self, micro_batch: int) -> str:
        """The moment of the peak at this micro-batch."""
        return max(self.phases, key=lambda k: micro_batch * self.phases[k][0] + self.phases[k][1])


def _head_phase(head: HeadSpec, itemsize: int, loss_chunk: int) -> tuple[int, int, int]:
    """The LM head's (bytes per sequence at its peak, bytes independent of the micro-batch at its
    peak, bytes per sequence still held while the blocks run backward)."""
    n, V, D = head.rows, head.vocab, head.width
    if loss_chunk == 0:  # the logits live until the step ends (the trainer's L2Wrap reads them)
        kept = n * D * itemsize + n * V * 4  # the head's input, the log-softmax
        transient = n * V * itemsize + 2 * n * V * 4 + (n * V * itemsize if head.l2wrap else 0)
        return kept + transient, 0, n * V * itemsize
    # chunked: at the last chunk of the forward pass, the stored gradients (hidden [n, D], the
    # head weight [V, D] in fp32), L2Wrap's rows and top-1, the weight in the compute dtype and
    # one chunk's logits and softmax; backward hands them on before the blocks' backward starts
    per = n * D * 4 + (n * D * itemsize + n * 12 if head.l2wrap else 0)
    fixed = ((V * D * 4 if head.trainable else 0) + (V * D * itemsize if itemsize != 4 else 0)
             + min(loss_chunk, n) * V * (4 + itemsize))
    return per, fixed, 0


def activation_peak(trace: StepTrace, head: HeadSpec | None, *, bf16: bool, wkv_kernel: bool,
                    grad_cp: bool, loss_chunk: int) -> Activations:
    """The activation peaks of a training step (module docstring) for a run in bf16 autocast or
    fp32, with the CUDA WKV kernel or the chunked form, with or without grad_cp."""
    outside, blocks = trace.saved_by_block(bf16, wkv_kernel)
    kept = outside + (sum(trace.block_inputs) if grad_cp else sum(blocks))
    block = int(max(blocks, default=0) * ((1.0 if grad_cp else 0.0) + BLOCK_TRANSIENT))
    name = "recomputed block" if grad_cp else "last block"
    if head is None:
        return Activations({name: (kept + block, 0)})
    head_per, head_fixed, held = _head_phase(head, 2 if bf16 else 4, loss_chunk)
    return Activations({name: (kept + held + block, 0), "LM head": (kept + head_per, head_fixed)})


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
    best = limit
    for per, fixed in act.phases.values():
        room = budget - states.total - fixed
        if room < 0:
            return 0
        if per > 0:
            best = min(best, room // per)
    return max(0, best)
