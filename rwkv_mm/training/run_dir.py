"""Run folders: one training at a time in a folder, and nothing of an earlier run lost.

`run_recipe(recipe, run_dir, resume=...)` is how `rwkv-mm train` and the quickstart run a
recipe's runner; it holds a `RunFolder` around the runner:

- a lock (`.lock`, see `run_lock`): a second training into the same folder fails at once naming
  the holder's PID; the lock of a process that died (kill -9) is taken over with a warning.
- A fresh run refuses a folder that holds anything, unless told what to do with it:
  `existing="overwrite"` removes what a run writes there (`run_outputs()`: the trainer's files
  and those every registered runner declares) and keeps every other file; `existing="replace_own"` (the quickstart) does the same but refuses when anything else is
  there.
- A resume compares the saved `config.yaml` with the new config and refuses changes of the
  run's meaning (every key but `FREE_KEYS`: model, data, batch size, seed, learning rates, ...)
  unless `allow_config_change`, naming the changed dotted keys.
- Temp files of writes that a kill cut short (`<name>.<8 random chars>.tmp`, see
  `rwkv_mm.backbone.files`) are removed once the lock is held.
- The new `config.yaml` is written at once for a fresh run; for a resume only when the trainer
  has loaded the checkpoint (`confirm_resumed`) or the runner has finished, so a failed resume
  leaves the saved config as it was.

Under torchrun only rank 0 checks and writes the folder; the other processes wait for its
verdict and fail with it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rwkv_mm.backbone import TEMP_SUFFIX
from rwkv_mm.errors import UserError

from .notices import warn
from .run_lock import LOCK_NAME, RunLock

__all__ = ["CONFIG_NAME", "FREE_KEYS", "LOGGER_OUTPUTS", "TRAINER_OUTPUTS", "RunFolder", "RunLock", "classify",
           "config_changes", "confirm_resumed", "flatten", "remove_outputs", "run_outputs",
           "run_recipe", "stale_temp_files", "training_folder"]

CONFIG_NAME = "config.yaml"

#: What train.loggers' sinks write into the run folder: TensorBoard's event files, W&B's folder.
LOGGER_OUTPUTS = ("events.out.tfevents.*", "wandb/*")
#: What every run writes into its folder (globs relative to it): the lock, the resolved config,
#: the trainer's logs, plot and checkpoint, the stage's summary ("loss.tmp.png": older versions'
#: temp file), the loggers' files, train.peft's adapter folder (`peft_tuning.export_adapters`).
#: Runners declare what they add: `register_runner(..., outputs=(...))`.
TRAINER_OUTPUTS = (LOCK_NAME, CONFIG_NAME, "metrics.jsonl", "loss.png", "loss.tmp.png", "summary.json",
                   "checkpoints/last.pt", *LOGGER_OUTPUTS, "adapter/adapter_config.json",
                   "adapter/adapter_model.safetensors")

#: Keys a resume may change freely: how long the run goes on and what it logs, evaluates or
#: generates on the way. Any other change needs `--allow-config-change`.
FREE_KEYS = (
    "description", "train.max_steps", "train.eval_every", "train.eval_batches", "train.save_every",
    "train.log_every", "train.skip_nonfinite", "generate.*", "eval.*",
    # how the same computation is run or recorded (same global batches, same gradients):
    "train.num_workers", "train.prefetch", "train.strategy", "train.grad_cp", "train.loss_chunk",
    "train.loggers", "train.peak_tflops", "train.segment_len",
)

#: `atomic_write`'s temp files: `<target>.<8 chars of mkstemp's alphabet><TEMP_SUFFIX>`.
_TEMP_NAME = re.compile(r".+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


# ----------------------------------------------------------------------------- contents
def run_outputs() -> tuple[str, ...]:
    """Globs (relative to a run folder) of every file a run writes: `TRAINER_OUTPUTS` and the
    outputs each registered runner declares. `--overwrite` removes these and nothing else."""
    from rwkv_mm.runners import list_runners

    declared = (pattern for runner in list_runners() for pattern in runner.outputs)
    return tuple(dict.fromkeys([*TRAINER_OUTPUTS, *declared]))


def _files_under(root: Path) -> Iterator[Path]:
    """Every non-directory entry under `root` (symlinks not followed)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in filenames:
            yield base / name
        for name in dirnames:  # a symlink to a folder is an entry, not a folder to enter
            if (base / name).is_symlink():
                yield base / name


def stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Temp files that `atomic_write` left when its process was killed mid-write."""
    return sorted(p for p in _files_under(Path(run_dir)) if _TEMP_NAME.fullmatch(p.name))


def _is_output(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns) or bool(
        _TEMP_NAME.fullmatch(rel.rsplit("/", 1)[-1]))


def classify(run_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(what a run writes, everything else) among the files under `run_dir`."""
    run_dir, patterns = Path(run_dir), run_outputs()
    outputs, foreign = [], []
    for path in sorted(_files_under(run_dir)):
        (outputs if _is_output(path.relative_to(run_dir).as_posix(), patterns) else foreign).append(path)
    return outputs, foreign


def remove_outputs(run_dir: str | os.PathLike, keep: tuple[str, ...] = ()) -> list[Path]:
    """Remove what a run wrote into `run_dir` (but the names in `keep`), and the folders that
    leaves empty; other files stay. Returns the files kept."""
    run_dir = Path(run_dir)
    outputs, foreign = classify(run_dir)
    emptied = set()
    for path in outputs:
        if path.relative_to(run_dir).as_posix() not in keep:
            path.unlink()
            emptied.update(p for p in path.parents if run_dir in p.parents)
    for folder in sorted(emptied, key=lambda p: -len(p.parts)):  # deepest first
        if not any(folder.iterdir()):
            folder.rmdir()
    return foreign


# ----------------------------------------------------------------------------- configs
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted key: leaf value} (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not tree and prefix:
        out[prefix] = {}
    return out


def config_changes(saved: dict, new: dict) -> tuple[list[str], list[str]]:
    """(changed keys that alter the run's meaning, keys only one side has), as dotted keys."""
    old_flat, new_flat = flatten(saved), flatten(new)
    changed = [k for k in new_flat if k in old_flat and old_flat[k] != new_flat[k]
               and not any(fnmatch.fnmatchcase(k, pattern) for pattern in FREE_KEYS)]
    one_side = sorted(set(old_flat) ^ set(new_flat))
    return changed, one_side


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ----------------------------------------------------------------------------- the folder
_OPEN: dict[Path, "RunFolder"] = {}  # resolved run folder -> the RunFolder held on it


def confirm_resumed(run_dir: str | os.PathLike) -> None:
    """Called by the trainer once a resumed run's checkpoint is loaded: the new config.yaml
    is written now (no-op when no `RunFolder` holds this folder)."""
    folder = _OPEN.get(Path(run_dir).resolve())
    if folder is not None:
        folder.write_pending_config()


class RunFolder:
    """The checks and the lock of one training into `run_dir` (a context manager).

    Args:
        run_dir: the run folder.
        recipe: the resolved `rwkv_mm.recipe.Recipe` this run trains.
        resume: continue the run in the folder (it must exist).
        existing: for a fresh run into a non-empty folder: "refuse", "overwrite" (remove what a run
            writes, keep other files) or "replace_own" (the same, but refuse when other files are
            there).
        allow_config_change: let a resume change keys outside `FREE_KEYS`.
    """

    def __init__(self, run_dir: str | os.PathLike, recipe, *, resume: bool = False,
                 existing: str = "refuse", allow_config_change: bool = False) -> None:
        if existing not in ("refuse", "overwrite", "replace_own"):
            raise ValueError(f"existing={existing!r}")
        if resume and existing != "refuse":
            raise UserError("--resume continues the run in the folder; --overwrite replaces it",
                            where=str(run_dir), fix="pass one of them")
        self.run_dir = Path(run_dir)
        self.recipe = recipe
        self.resume, self.existing, self.allow_config_change = resume, existing, allow_config_change
        self.lock = RunLock(self.run_dir)
        self._pending: bool = False

    def __enter__(self) -> "RunFolder":
        run_dir = self.run_dir
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError("the run folder is a file", where=str(run_dir), fix="pass another --run-dir")
        if self.resume and not (run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir())):
            raise UserError("nothing to resume: the run folder is empty or missing", where=str(run_dir),
                            fix="train without --resume to start the run")
        self.lock.acquire()
        try:
            for tmp in stale_temp_files(run_dir):
                warn(f"removing {tmp}, left by a write that was cut short")
                tmp.unlink()
            if self.resume:
                self._check_config()
                self._pending = True
                _OPEN[run_dir.resolve()] = self
            else:
                self._make_room()
                self._write_config()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _OPEN.pop(self.run_dir.resolve(), None)
        try:
            if exc_type is None:
                self.write_pending_config()  # a runner that never loaded a checkpoint finished
            elif not self.resume:
                self._forget_unstarted_run()
        finally:
            self.lock.release()

    def _forget_unstarted_run(self) -> None:
        """A fresh run that failed before writing anything but its config.yaml (a missing init_from,
        a bad data file): remove that config.yaml, so that the same command, corrected, starts
        again instead of finding the folder taken."""
        entries = {p.name for p in self.run_dir.iterdir()} - {LOCK_NAME} if self.run_dir.is_dir() else set()
        if entries == {CONFIG_NAME}:
            (self.run_dir / CONFIG_NAME).unlink()

    def write_pending_config(self) -> None:
        """Write a resumed run's new config.yaml (once)."""
        if self._pending:
            self._pending = False
            self._write_config()

    def _write_config(self) -> None:
        from rwkv_mm.recipe import save_resolved_config

        save_resolved_config(self.recipe, self.run_dir)

    def _make_room(self) -> None:
        run_dir = self.run_dir
        entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
        if not entries:
            return
        if self.existing == "refuse":
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(f"the run folder is not empty ({shown})", where=str(run_dir),
                            fix="pass --resume to continue its run, --overwrite to replace its outputs, "
                                "or another --run-dir")
        _, foreign = classify(run_dir)
        if foreign and self.existing == "replace_own":
            raise UserError(f"the run folder holds files a run does not write "
                            f"({foreign[0].relative_to(run_dir)})", where=str(run_dir),
                            fix="move them away or choose another folder")
        kept = remove_outputs(run_dir, keep=(LOCK_NAME,))
        if kept:
            warn(f"kept {len(kept)} file(s) a run does not write, e.g. {kept[0]}")

    def _check_config(self) -> None:
        from rwkv_mm.recipe import read_resolved_config, resolved_tree

        path = self.run_dir / CONFIG_NAME
        if not path.is_file():
            warn(f"{path} is missing: the new config is not compared with the run's")
            return
        saved = read_resolved_config(path)
        changed, one_side = config_changes(saved, resolved_tree(self.recipe))
        if changed and not self.allow_config_change:
            old, new = flatten(saved), flatten(resolved_tree(self.recipe))
            listed = "; ".join(f"{k}: {_short(old[k])} -> {_short(new[k])}" for k in changed)
            raise UserError(f"the resumed config changes what the run means ({listed})", where=str(path),
                            fix="resume with the saved settings, pass --allow-config-change to change "
                                "them anyway, or start a new run (--overwrite or another --run-dir)")
        if changed:
            warn(f"resuming with changed settings: {', '.join(changed)}")
        if one_side:
            warn(f"keys in only one of {path} and the new config (not compared): {', '.join(one_side)}")


@contextlib.contextmanager
def training_folder(run_dir: str | os.PathLike, recipe, **kwargs) -> Iterator[RunFolder | None]:
    """`RunFolder(run_dir, recipe, **kwargs)` held by rank 0; under torchrun the other ranks wait
    for its checks and fail with the same message when they fail."""
    from .distributed import rank_and_world

    rank, world = rank_and_world()
    folder = RunFolder(run_dir, recipe, **kwargs) if rank == 0 else None
    failure: BaseException | None = None
    if folder is not None:
        try:
            folder.__enter__()
        except Exception as err:  # noqa: BLE001 — handed to the other ranks, then raised
            failure = err
    if world > 1:
        import torch.distributed as dist

        verdict = [None if failure is None else str(failure)]
        dist.broadcast_object_list(verdict, src=0)
        if rank != 0 and verdict[0] is not None:
            raise UserError(f"rank 0 refused the run folder: {verdict[0]}")
    if failure is not None:
        raise failure
    if folder is None:
        yield None
        return
    try:
        yield folder
    except BaseException:
        folder.__exit__(*sys.exc_info())
        raise
    folder.__exit__(None, None, None)


def run_recipe(recipe, run_dir: str | os.PathLike, *, resume: bool = False, existing: str = "refuse",
               allow_config_change: bool = False) -> dict:
    """Run `recipe`'s runner into `run_dir` while holding the folder (see the module docstring);
    returns the runner's summary."""
    from rwkv_mm.runners import get_runner

    runner = get_runner(recipe.runner)
    with training_folder(run_dir, recipe, resume=resume, existing=existing,
                         allow_config_change=allow_config_change):
        return runner.fn(recipe.config, Path(run_dir), resume)
