"""Folders of generated data (the synthetic sets): written only where nothing of the user's is lost.

`build_generated(out, fill, ...)` calls `fill(folder)` on a fresh private folder made with
`tempfile.mkdtemp` beside `out` (inside it when it is a mount point), lists every file it wrote in a marker file
(`.rwkv_mm_generated`, JSON) and publishes it:

* `out` does not exist: the folder is renamed to `out` (atomic);
* `out` is an empty folder, or one whose marker says rwkv_mm made it: the files are moved in,
  the set's `sentinel` file (the one whose presence says "complete", e.g. the settings) removed
  first and moved in last, so an interrupted run never leaves a set that looks complete. Of the
  old contents only the files the old marker lists are removed: a file the user added survives,
  and a new file whose name is taken by one of the user's stops the run before anything changes;
* anything else (a file, a non-empty folder without a marker) raises `UserError` naming the
  folder: nothing is removed or overwritten.

The marker lists paths relative to `out`; entries that are absolute or climb out with `..`
make the marker invalid (then the folder counts as the user's). Files are removed only when they
are regular files reached through real folders (no symbolic links). Temp folders of a killed run
(`.<out name>.<random>.partial` beside `out`, holding this user's marker and the dead process's
id) are removed by the next build.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from rwkv_mm.backbone import atomic_write, current_umask
from rwkv_mm.errors import UserError

__all__ = ["MARKER", "PARTIAL_SUFFIX", "build_generated", "read_marker"]

#: The file that says rwkv_mm made a folder, and lists what it wrote there.
MARKER = ".rwkv_mm_generated"
#: Suffix of the temp folders beside the target.
PARTIAL_SUFFIX = ".partial"


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of `folder` ({"generator", "files", "dirs", ...}), or None when there is none
    or it is not a valid one (not JSON, wrong types, or a path leaving the folder)."""
    path = Path(folder) / MARKER
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for key in ("files", "dirs"):
        entries = data.get(key)
        if not isinstance(entries, list) or not all(isinstance(e, str) and _is_inside(e) for e in entries):
            return None
    return data


def _is_inside(rel: str) -> bool:
    """`rel` is a normalised relative path strictly inside a folder (no `..`), not the marker."""
    p = PurePosixPath(rel)
    return bool(rel) and rel == p.as_posix() and not p.is_absolute() and ".." not in p.parts \
        and rel != MARKER


def _write_marker(folder: Path, generator: str, files: list[str], dirs: list[str]) -> None:
    data = {"generator": generator, "pid": os.getpid(), "host": socket.gethostname(),
            "files": sorted(files), "dirs": sorted(dirs)}
    atomic_write(folder / MARKER, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n",
                                                                     encoding="utf-8"))


def _refuse(out: Path, what: str, choice: str) -> UserError:
    return UserError(what, where=str(out), fix=f"{choice}; nothing was changed")


def _owned(out: Path, setting: str) -> dict | None:
    """None when `out` does not exist; else what the marker lists (nothing for an empty folder).
    Raises `UserError` for a file or a non-empty folder rwkv_mm did not make."""
    if not os.path.lexists(out):
        return None
    if not out.is_dir():
        raise _refuse(out, "the output for generated data exists and is not a folder",
                      f"choose a new or empty folder for {setting}")
    marker = read_marker(out)
    if marker is not None:
        return marker
    if any(out.iterdir()):
        raise _refuse(out, f"refusing to write generated data into a non-empty folder it did not create "
                           f"(no valid {MARKER})", f"choose a new or empty folder for {setting}")
    return {"files": [], "dirs": []}


def _listing(folder: Path) -> tuple[list[str], list[str]]:
    """(files, folders) under `folder`, relative posix paths, the marker left out."""
    files, dirs = [], []
    for root, subdirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        dirs += [(rel / d).as_posix() for d in subdirs]
        files += [(rel / n).as_posix() for n in names if not (rel == Path(".") and n == MARKER)]
    return sorted(files), sorted(dirs)


def _real_folders_to(out: Path, rel: str) -> bool:
    """Every folder between `out` and `out/rel` is a real folder (not a symbolic link)."""
    p = out
    for part in PurePosixPath(rel).parts[:-1]:
        p = p / part
        try:
            if not stat.S_ISDIR(os.lstat(p).st_mode):
                return False
        except OSError:
            return False
    return True


def _remove_own_file(out: Path, rel: str) -> None:
    """Remove out/rel if it is a regular file reached through real folders; else leave it."""
    path = out / rel
    try:
        if _real_folders_to(out, rel) and stat.S_ISREG(os.lstat(path).st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def _clashes(out: Path, owned: dict, files: list[str], dirs: list[str]) -> list[str]:
    """Paths of the new set whose place in `out` is taken by something rwkv_mm did not write:
    a folder that is a file or a link, or a file it did not list (or that is no regular file)."""
    mine = set(owned["files"])
    bad = [d for d in dirs if os.path.lexists(out / d) and not stat.S_ISDIR(os.lstat(out / d).st_mode)]
    for rel in files:
        path = out / rel
        if os.path.lexists(path) and (rel not in mine or not stat.S_ISREG(os.lstat(path).st_mode)):
            bad.append(rel)
    return bad


def _merge(tmp: Path, out: Path, owned: dict, generator: str, sentinel: str, setting: str) -> None:
    """Move the files of `tmp` into the existing folder `out` (see the module docstring)."""
    files, dirs = _listing(tmp)
    clashes = _clashes(out, owned, files, dirs)
    if clashes:
        raise _refuse(out, f"generated data would replace {len(clashes)} path(s) it did not write "
                           f"(e.g. {clashes[0]})", f"move them away or choose a new or empty folder for {setting}")
    old_files, old_dirs = set(owned["files"]), set(owned["dirs"])
    _write_marker(out, generator, sorted(old_files | set(files)), sorted(old_dirs | set(dirs)))
    _remove_own_file(out, sentinel)  # first: from here on the set does not look complete
    for rel in sorted(old_files - set(files)):
        _remove_own_file(out, rel)
    for rel in sorted(dirs, key=lambda d: d.count("/")):
        (out / rel).mkdir(exist_ok=True)
    for rel in sorted(files, key=lambda f: f == sentinel):  # the sentinel last
        os.replace(tmp / rel, out / rel)
    for rel in sorted(old_dirs - set(dirs), key=lambda d: -d.count("/")):
        try:
            if _real_folders_to(out, rel) and stat.S_ISDIR(os.lstat(out / rel).st_mode):
                (out / rel).rmdir()  # only if empty: a folder with the user's files stays
        except OSError:
            pass
    _write_marker(out, generator, files, dirs)


def _temp_parent(out: Path) -> Path:
    """Where the temp folder goes: beside `out` (its real path), or inside it when `out` is a
    mount point (so that files are moved, not copied, from one to the other)."""
    real = Path(os.path.realpath(out))
    if real.is_dir() and os.stat(real).st_dev != os.stat(real.parent).st_dev:
        return real
    return real.parent


def _remove_stale_partials(out: Path, parent: Path) -> None:
    """Remove temp folders in `parent` left by a killed build of `out` by this user on this host."""
    host = socket.gethostname()
    for d in parent.glob(f".{out.name}.*{PARTIAL_SUFFIX}"):
        try:
            st = os.lstat(d)
        except OSError:
            continue
        marker = read_marker(d) if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() else None
        if marker is None or marker.get("host") != host or not isinstance(marker.get("pid"), int):
            continue
        if marker["pid"] == os.getpid() or _alive(marker["pid"]):
            continue
        shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def build_generated(out: str | os.PathLike, fill: Callable[[Path], None], *, generator: str,
                    sentinel: str, setting: str = "the output") -> Path:
    """Generate a data set into `out` without touching anything rwkv_mm did not write there.

    Args:
        out: the folder to publish (created, or an empty folder, or one rwkv_mm made).
        fill: writes the set into the folder it is given (a fresh private one).
        generator: who made it, recorded in the marker ("rwkv_mm.audio.synth").
        sentinel: the file of the set whose presence means complete (removed first, moved last).
        setting: how the user names `out`, for the error message ("--out or data.synthetic.out").

    Returns:
        `out`.

    Raises:
        UserError: `out` is a file, a non-empty folder without a valid marker, or holds a file
            of the user's where the set puts one of its own.
    """
    out = Path(out)
    owned = _owned(out, setting)
    out.parent.mkdir(parents=True, exist_ok=True)
    parent = _temp_parent(out)
    _remove_stale_partials(out, parent)
    tmp: Path | None = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX, dir=parent))
    try:
        _write_marker(tmp, generator, [], [])  # marks the temp folder as this process's
        fill(tmp)
        _write_marker(tmp, generator, *_listing(tmp))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 -> what mkdir would give
        if owned is None:
            try:
                os.rename(tmp, out)  # atomic; fails if `out` appeared meanwhile and is not empty
                tmp = None
                return out
            except OSError:
                owned = _owned(out, setting)
        _merge(tmp, out, owned, generator, sentinel, setting)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
