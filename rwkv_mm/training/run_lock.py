"""The lock of a run folder: one training at a time in it (`.lock`: an flock plus the holder's
PID and host). A second training into the same folder fails at once naming that PID; the lock of
a process that died (kill -9) is free again and is taken over with a warning naming it."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from rwkv_mm.errors import UserError

from .notices import warn

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_holder(path: Path) -> tuple[int | None, str]:
    """(PID, host) written in a lock file; (None, "") when unreadable."""
    try:
        fields = path.read_text(errors="replace").split()
        return int(fields[0]), (fields[1] if len(fields) > 1 else "")
    except (OSError, ValueError, IndexError):
        return None, ""


class RunLock:
    """An exclusive lock on a run folder: `<run_dir>/.lock`, flock'ed while held, holding
    "<pid> <host>". The kernel frees the flock when the holder dies, so a lock of a dead process
    is free; it is taken over with a warning naming that process."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid, host = _read_holder(self.path)
                holder = "another process" if pid is None else f"PID {pid}"
                if pid is not None and host and host != socket.gethostname():
                    holder += f" on {host}"
                raise UserError(f"another training ({holder}) is using this run folder",
                                where=str(self.path.parent),
                                fix="wait for it to finish, or train into another --run-dir") from None
            # The holder before us may have removed the file between our open and flock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old_pid, old_host = _read_holder(self.path)
        if old_pid is not None and old_pid != os.getpid():
            where = f" on {old_host}" if old_host and old_host != socket.gethostname() else ""
            state = "no longer running" if where or not _pid_alive(old_pid) else "no longer holding it"
            warn(f"taking over the stale lock of PID {old_pid}{where} ({state}), {self.path}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and free the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)  # closing frees the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
