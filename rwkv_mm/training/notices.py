"""Warnings a training prints for the user (one `rwkv-mm: warning: ...` line each)."""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    """One `rwkv-mm: warning: ...` line on stderr."""
    print(f"rwkv-mm: warning: {message}", file=sys.stderr, flush=True)
