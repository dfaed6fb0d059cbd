"""Answers files of `rwkv-mm eval`: JSON lines in LLaVA's answer format after one header line
that says what produced them, so a rerun resumes only what the same model and settings began.

    {"rwkv_mm_answers_header": {"format": 1, "benchmark": "gqa", "checkpoint": {"sha256": ...,
     "path": ..., "files": {...}}, "max_new_tokens": 16, "template": {...}, "image_position": ...,
     "image_size": 336, "pad_to_square": false}}
    {"question_id": "201307251", "prompt": "...", "text": "Yes", "answer_id": ..., "model_id": ...,
     "metadata": {}}

A rerun compares its settings with the header and refuses to add to a file made with other ones
(UserError naming the file and the differing setting): answers of `--max-new-tokens 0` (all
empty) must not be scored together with real ones, nor answers of another checkpoint. Batch
size and the image-state cache are not recorded: they do not change greedy answers (the
resume test decodes B=1 without the cache and gets the same text).

The checkpoint is identified by the sha256 of the contents of the files the loader reads
(`visual_rwkv.json`, backbone and projector of our folder; the one released `.pth`), with each
file's name and size. Hashing costs about one more read of the files (~1-2 s per GB, from the
page cache right after loading the model) — minutes at most for the largest checkpoints,
against an evaluation of hours, and done once per run. A rerun whose files have the recorded
sizes and modification times (ns) takes the recorded hash without reading them again; a copy or
a touch falls back to hashing, so only content counts.

LLaVA's own converters read every line as an answer: drop the header first (`tail -n +2`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rwkv_mm.backbone import atomic_write
from rwkv_mm.errors import UserError

HEADER_KEY = "rwkv_mm_answers_header"
FORMAT = 1
_CHUNK = 1 << 22  # 4 MiB reads while hashing
_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns) of each file -> sha256, for this process


def checkpoint_files(checkpoint: str | Path) -> list[Path]:
    """The files `load_visual_rwkv` reads: the `.pth` itself, or our folder's meta file plus the
    backbone and projector it names."""
    from .checkpoint import META_FILE, read_meta

    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        return [checkpoint]
    meta = read_meta(checkpoint)
    return [checkpoint / META_FILE, checkpoint / meta["backbone"], checkpoint / meta["projector"]]


def _stats(files: list[Path]) -> dict[str, list[int]]:
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}


def checkpoint_fingerprint(checkpoint: str | Path, known: dict | None = None) -> dict:
    """{"sha256", "path", "files": {name: [size, mtime_ns]}} of a checkpoint. `known` (a previous
    fingerprint) is returned as is when every file still has its size and mtime."""
    files = checkpoint_files(checkpoint)
    stats = _stats(files)
    if known and known.get("files") == stats and known.get("sha256"):
        return {**known, "path": str(checkpoint)}
    key = tuple((str(f.resolve()), *stats[f.name]) for f in files)
    if key not in _HASHES:  # POPE's three splits hash the checkpoint once
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return {"sha256": _HASHES[key], "path": str(checkpoint), "files": stats}


def read_rows(path: Path) -> tuple[dict | None, dict[str, dict]]:
    """(header or None, question_id -> answer row) of an answers file; a line torn by a crash is
    ignored (its question is answered again)."""
    header, rows = None, {}
    if not path.is_file():
        return header, rows
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                raise UserError(f"line {lineno} is not a JSON object", where=str(path),
                                fix="pass another --answers path")
            if HEADER_KEY in row:
                header = row[HEADER_KEY]
                continue
            if "question_id" not in row or "text" not in row:
                raise UserError(f"line {lineno} is not an answer (no question_id/text)", where=str(path),
                                fix="pass another --answers path")
            rows[str(row["question_id"])] = row
    return header, rows


def read_answers(path: str | Path) -> dict[str, str]:
    """question_id -> answer text of an answers file (the header is skipped)."""
    return {qid: row["text"] for qid, row in read_rows(Path(path))[1].items()}


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline, so appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def open_answers(path: Path, settings: dict, checkpoint: str | Path) -> dict[str, dict]:
    """Make `path` ready for appending answers made with `settings` by `checkpoint`; returns the
    rows already there (question_id -> row).

    A new (or empty) file gets the header. An existing one must carry a header with the same
    settings and checkpoint hash; otherwise a UserError names the file and what differs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(path)
    header, rows = read_rows(path)
    fix = "pass another --answers path (or delete that file to answer everything again)"
    if header is None:
        if rows:
            raise UserError(f"{len(rows)} answers without an rwkv_mm header (an older or another "
                            "tool's file): which checkpoint and settings made them is unknown",
                            where=str(path), fix=fix)
        fingerprint = checkpoint_fingerprint(checkpoint)
        line = json.dumps({HEADER_KEY: {"format": FORMAT, **settings, "checkpoint": fingerprint}}) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(line, encoding="utf-8"))
        return rows
    for key, value in settings.items():
        if header.get(key) != value:
            raise UserError(f"its answers were made with {key}={json.dumps(header.get(key))}, this run "
                            f"has {key}={json.dumps(value)}; answers of different settings are not mixed",
                            where=str(path), fix=fix)
    old = header.get("checkpoint") or {}
    now = checkpoint_fingerprint(checkpoint, known=old)
    if now["sha256"] != old.get("sha256"):
        raise UserError(f"its answers came from another checkpoint ({old.get('path')}, sha256 "
                        f"{str(old.get('sha256'))[:12]}...) than {checkpoint} (sha256 {now['sha256'][:12]}...)",
                        where=str(path), fix=fix)
    return rows


def append_answers(f, rows: list[dict]) -> None:
    """Write answer rows to the open file `f` and make them durable (flush + fsync)."""
    for row in rows:
        f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
