"""User-facing errors (re-exported from the backbone, where they are defined) and how the CLI
turns any exception into one line and an exit status.

    raise UserError("not a LLaVA JSON list", where="data/x.json", fix="check data.data_path")

`describe(err)` gives the exit status and the message: 2 with the error's own text for a user's
mistake (a `UserError`, a missing/unreadable path, a full disk), 1 for anything else (a bug in
rwkv_mm: the CLI adds the traceback with `--debug` or RWKV_MM_DEBUG=1).
"""

from __future__ import annotations

from rwkv_mm.backbone import (ConfigError, DiskFullError, UserError, check_choice, check_float,
                              check_int, is_disk_full)

__all__ = ["UserError", "ConfigError", "DiskFullError", "check_int", "check_float",
           "check_choice", "describe", "is_disk_full"]


def describe(err: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that reached the command line."""
    if isinstance(err, UserError):
        return 2, str(err)
    if is_disk_full(err):
        return 2, f"disk full ({err}): free some space and rerun; files being replaced were kept"
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                        FileExistsError)):
        name = f"{err.filename}: " if getattr(err, "filename", None) else ""
        return 2, f"{name}{err.strerror or err}" if name else str(err)
    if isinstance(err, MemoryError):
        return 2, "out of memory: use a smaller batch, model or input"
    return 1, (f"internal error ({type(err).__name__}: {err}); this is a bug in rwkv_mm — rerun "
               "with --debug (or RWKV_MM_DEBUG=1) for the traceback and report it")
