"""The planner's activation estimate against the peak memory really measured on the CPU.

Each case runs `peak_probe.py` in a fresh process (how it measures and why that is reliable: its
docstring) for one small language model — Finch, Eagle and GoldFinch at two widths and two
lengths, micro-batch 1 and 2, full logits with a large vocabulary (the LM head is the peak) and
the chunked LM-head loss — with and without train.grad_cp, and asserts the planner's estimate for
that run (CPU: fp32, chunked WKV) is within 20% of what was measured (at the time of writing:
within 4% for every case).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planning.probe_config import probe_config
from rwkv_mm.planning import estimate

PROBE = Path(__file__).with_name("peak_probe.py")
TOLERANCE = 0.20

#: (version, n_layer, n_embd, seq_len, vocab_size, micro-batch, train.loss_chunk)
SHAPES = [
    ("6", 2, 128, 256, 4096, 1, 0),  # Finch, full logits: the LM head is the peak
    ("6", 2, 256, 512, 256, 1, 0),  # Finch, wider and longer: a block's backward is the peak
    ("6", 2, 128, 512, 256, 2, 0),  # Finch, micro-batch 2
    ("5", 2, 256, 512, 256, 1, 0),  # Eagle
    ("goldfinch", 3, 256, 512, 256, 1, 0),  # GoldFinch: Finch-C2 below, a GOLD attention layer on top
    ("6", 2, 128, 256, 4096, 2, 64),  # Finch, the chunked LM-head loss (train.loss_chunk)
    ("5", 2, 256, 512, 4096, 1, 100),  # Eagle, chunks that do not divide T
]


def measure(spec: dict) -> int:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "16384", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(PROBE), json.dumps(spec)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["peak"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
@pytest.mark.parametrize("grad_cp", [False, True], ids=["plain", "grad_cp"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{s[0]}-L{s[1]}-D{s[2]}-T{s[3]}-V{s[4]}-B{s[5]}-C{s[6]}"
                                              for s in SHAPES])
def test_activation_estimate_within_20_percent_of_measured(shape, grad_cp):
    version, n_layer, n_embd, seq_len, vocab, batch, chunk = shape
    cfg = probe_config(version, n_layer, n_embd, vocab, seq_len, grad_cp=grad_cp, loss_chunk=chunk)
    plan = estimate(cfg, runner="probe", device="cpu", micro_batch=batch)
    assert not plan.bf16 and not plan.wkv_kernel and plan.loss_chunk == chunk
    predicted = plan.activation_bytes(batch, grad_cp)
    measured = measure({"version": version, "n_layer": n_layer, "n_embd": n_embd, "vocab_size": vocab,
                        "seq_len": seq_len, "batch": batch, "grad_cp": grad_cp, "loss_chunk": chunk})
    assert abs(predicted - measured) <= TOLERANCE * measured, (
        f"estimate {predicted / 2**20:.2f} MiB, measured {measured / 2**20:.2f} MiB")
