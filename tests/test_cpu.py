"""Process-level CPU tuning."""

import sys

import torch

from rwkv_mm.cpu import tune_malloc


def test_tune_malloc_applies_on_linux_and_changes_no_results():
    a = torch.randn(64, 1024)
    before = a * 2
    applied = tune_malloc()
    assert applied == sys.platform.startswith("linux")
    assert torch.equal(a * 2, before)
