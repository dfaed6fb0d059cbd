"""Writing files so that nothing is lost: temp file beside the target, then rename.

`atomic_write(path, write)` gives readers the old file or the new one, never half of one; a
crash or a full disk leaves the old file in place and no temp file behind (a kill -9 can leave
one: `TEMP_GLOB` names them for the next start to clean). The new file gets the permissions a
plain `open(path, "w")` would give (0666 less the umask), not mkstemp's private 0600, so saved
models stay readable in shared folders.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import DiskFullError, is_disk_full

#: Temp files `atomic_write` makes beside `name`: `name.<random>.tmp`.
TEMP_SUFFIX = ".tmp"

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """Leftover temp files of `atomic_write(path, ...)` (from a process killed mid-write)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.name}.*{TEMP_SUFFIX}"))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(temp_path)` for a temp file beside `path`, then rename it onto `path`.

    Readers never see a half-written file; a failure (a full disk raises `DiskFullError` naming
    the file) leaves the previous `path` intact and removes the temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except Exception as err:
        if is_disk_full(err):
            raise DiskFullError(f"disk full while writing ({err})", where=str(path),
                                fix="free some space and rerun (the previous file was kept)") from err
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
