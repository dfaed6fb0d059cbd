"""Running `rwkv-mm` in the test process (fast) or as a child process (kill tests), and
checks shared by the robustness suite."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rwkv_mm.cli import main


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def run_cli(*args: str, cwd: str | os.PathLike | None = None) -> CliResult:
    """`rwkv-mm ARGS` in this process (argparse exits are caught), from `cwd`."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main([str(a) for a in args])
            except SystemExit as exit_:
                rc = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        os.chdir(old)
    return CliResult(rc, out.getvalue(), err.getvalue())


def spawn_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
              **popen) -> subprocess.Popen:
    """`python -m rwkv_mm.cli ARGS` as a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "rwkv_mm.cli", *map(str, args)], cwd=cwd,
                            env=full_env, **popen)


def assert_user_error(result: CliResult, *culprits: str) -> None:
    """Exit status 2, one `rwkv-mm: error:` line naming every culprit, no traceback."""
    assert result.rc == 2, f"exit {result.rc}, stderr:\n{result.err}"
    assert "Traceback" not in result.err, result.err
    line = [ln for ln in result.err.splitlines() if ln.startswith("rwkv-mm: error:")]
    assert line, result.err
    for culprit in culprits:
        assert culprit in line[-1], f"{culprit!r} not in {line[-1]!r}"


def tree_snapshot(root: str | os.PathLike) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content): to check nothing outside was touched."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
