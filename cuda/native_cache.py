"""Folders and files for code built at run time, trusted only when nobody else could have written them.

Native code (the fbank's C loops, the WKV CUDA extension) is compiled on first use into a cache
folder and loaded into the process. A library there is run, so the folder must be one that only
the current user can change:

* `why_unsafe(folder)` walks the path as the kernel does (following every symbolic link): every
  symbolic link on the way is owned by the user or root, every folder on the way is owned by the
  user or root and, if others may write it, has the sticky bit (like /tmp); the folder itself is
  owned by the user and not group/world-writable.
* `private_dir(folder)` creates the folder (mode 0700) and returns it when it passes, else warns
  once and returns a private folder made with `tempfile.mkdtemp` for this process (removed at
  exit), or None when even that is not safe.
* `verified(path)` checks a built file before it is loaded: a regular file (not a link) owned by
  the user, not group/world-writable, whose SHA-256 matches the sidecar `<path>.sha256` that
  `publish` wrote at build time.
* `tool_fingerprint(exe)` is what names a build: the compiler's path, real path and `--version` text.

Standard library only (kernels import nothing but torch and the standard library).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["DIGEST_SUFFIX", "file_digest", "private_dir", "publish", "tool_fingerprint",
           "verified", "why_unsafe"]

#: The sidecar holding a built file's SHA-256: `<file>.sha256`.
DIGEST_SUFFIX = ".sha256"
_MAX_LINKS = 40

_lock = threading.Lock()
_process_dir: Path | None = None
_warned: set[str] = set()


def _trusted_owner(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def why_unsafe(folder: str | os.PathLike) -> str | None:
    """Why a library in `folder` could have been put there by someone else, or None when only
    the current user (or root) can change it. A missing folder is unsafe ("does not exist")."""
    me = os.geteuid()
    todo = list(Path(os.path.abspath(folder)).parts[1:])
    cur, links = Path("/"), 0
    try:
        reason = _why_unsafe_ancestor(cur, os.lstat(cur))
        while reason is None and todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                cur = cur.parent
                continue
            nxt = cur / part
            st = os.lstat(nxt)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if not _trusted_owner(st.st_uid):
                    return f"{nxt} is a symbolic link owned by another user (uid {st.st_uid})"
                if links > _MAX_LINKS:
                    return f"{folder}: too many levels of symbolic links"
                target = Path(os.readlink(nxt))
                if target.is_absolute():
                    cur = Path("/")
                todo = list(target.parts[1:] if target.is_absolute() else target.parts) + todo
                continue
            if not stat.S_ISDIR(st.st_mode):
                return f"{nxt} is not a folder"
            cur = nxt
            reason = _why_unsafe_ancestor(cur, st) if todo else None
        if reason is not None:
            return reason
        st = os.lstat(cur)
    except FileNotFoundError:
        return f"{folder} does not exist"
    except OSError as err:
        return f"{folder}: {err.strerror or err}"
    if st.st_uid != me:
        return f"{cur} is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"{cur} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _why_unsafe_ancestor(path: Path, st: os.stat_result) -> str | None:
    """A folder above the cache: owned by the user or root, and others may not rename its
    entries (not group/world-writable, or sticky)."""
    if not _trusted_owner(st.st_uid):
        return f"{path} (a folder above it) is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"{path} (a folder above it) is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def private_dir(folder: str | os.PathLike, what: str = "native code") -> Path | None:
    """`folder` (created with mode 0700 if missing) when only this user can change it, else a
    private temp folder for this process (warned once per folder), else None.

    Args:
        folder: the wanted cache folder.
        what: what is built there, for the warning ("the fbank's C loops").
    """
    folder = Path(folder)
    _make_private_dirs(folder)
    reason = why_unsafe(folder)
    if reason is None:
        return folder
    fallback = _process_temp_dir()
    key = f"{folder}\0{what}"
    if key not in _warned:
        _warned.add(key)
        where = f"a private temp folder ({fallback})" if fallback else "nowhere (using the slower fallback)"
        warnings.warn(f"not using the cache folder {folder} for {what}: {reason}; building in {where}",
                      RuntimeWarning, stacklevel=2)
    return fallback


def _make_private_dirs(folder: Path) -> None:
    """Create the missing folders of `folder`, each with mode 0700 (not the umask's 0775)."""
    missing = []
    for p in [folder, *folder.parents]:
        if os.path.lexists(p):
            break
        missing.append(p)
    try:
        for p in reversed(missing):
            os.mkdir(p, 0o700)
    except OSError:
        pass  # why_unsafe says why


def _process_temp_dir() -> Path | None:
    """One mkdtemp folder for this process's builds (removed at exit), or None if it is unsafe."""
    global _process_dir
    with _lock:
        if _process_dir is None:
            try:
                path = Path(tempfile.mkdtemp(prefix="rwkv_mm_native_"))
            except OSError:
                return None
            atexit.register(shutil.rmtree, path, True)
            _process_dir = path
        return None if why_unsafe(_process_dir) else _process_dir


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(path: str | os.PathLike) -> bool:
    """`path` may be loaded: a regular file owned by this user, not writable by others, whose
    SHA-256 is the one in `<path>.sha256` (itself a regular file of this user's)."""
    path = Path(path)
    sidecar = path.with_name(path.name + DIGEST_SUFFIX)
    for p in (path, sidecar):
        try:
            st = os.lstat(p)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return False
    try:
        return sidecar.read_text().strip() == file_digest(path)
    except OSError:
        return False


def publish(built: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move a freshly built file onto `target` (same folder system) and write its digest sidecar."""
    target = Path(target)
    digest = file_digest(built)
    os.replace(built, target)
    sidecar = target.with_name(target.name + DIGEST_SUFFIX)
    fd, tmp = tempfile.mkstemp(prefix=sidecar.name + ".", dir=target.parent)
    with os.fdopen(fd, "w") as f:
        f.write(digest + "\n")
    os.replace(tmp, sidecar)
    return target


def tool_fingerprint(exe: str) -> tuple[str, str] | None:
    """(the path to run, what identifies it) for a compiler: the identity is its path, real path
    and `--version` output (what a build's name hashes); None when it cannot be run."""
    found = shutil.which(exe)
    if not found:
        return None
    try:
        result = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return found, f"{found}\n{os.path.realpath(found)}\n{result.stdout}{result.stderr}"
