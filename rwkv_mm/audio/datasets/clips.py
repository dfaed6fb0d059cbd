"""The dataset of tagging clips: fixed-length waveforms with multi-hot targets, where a bad file
(unreadable, NaN/Inf samples, silent, too short) is counted and replaced, never fatal; and the
collate function that stacks its samples. The clip lists come from `audioset.py`."""

from __future__ import annotations

from typing import Any

import torch

from rwkv_mm.errors import UserError

from ..io import AudioLoadError, fix_length, load_audio, random_offset
from .audioset import ClipRecord, ProblemLog


class AudioTaggingDataset:
    """Fixed-length clips with multi-hot targets; bad files are reported, never fatal.

    `dataset[i]` returns {"wave": [L] float32, "length": real samples, "target": [C] float32,
    "index": i}; when clip i turns out unreadable, non-finite (a NaN/Inf sample), silent or too
    short it is remembered as bad and the next good clip is returned instead. `load(i)` returns
    None for a bad clip (evaluation skips it).

    Args:
        records: the clips (see `read_segments` / `read_manifest`).
        num_classes: C.
        clip_samples: L, the fixed length (crop or zero-pad).
        sample_rate: files are resampled to it.
        random_crop: crop longer clips at a random offset (training); else from the start.
        min_seconds: shorter files are "too_short".
        window_samples: the fbank's window (samples at `sample_rate`): shorter files are always
            "too_short", whatever `min_seconds` says (they have no frame to analyse).
        silence_peak: files whose peak |x| is below it are "silent".
        problems: the log to count problems in (shared with the list readers).
    """

    def __init__(self, records: list[ClipRecord], num_classes: int, clip_samples: int,
                 sample_rate: int = 16000, random_crop: bool = False, min_seconds: float = 0.1,
                 silence_peak: float = 1e-4, problems: ProblemLog | None = None,
                 window_samples: int = 0) -> None:
        self.records = records
        self.num_classes = num_classes
        self.clip_samples = clip_samples
        self.sample_rate = sample_rate
        self.random_crop = random_crop
        self.min_samples = max(int(min_seconds * sample_rate), window_samples, 1)
        self.silence_peak = silence_peak
        self.problems = problems if problems is not None else ProblemLog()
        self.bad: set[int] = set()
        self.new_bad: list[tuple[int, str, str]] = []  # found since `take_worker_report` (data workers)

    def __len__(self) -> int:
        return len(self.records)

    def targets(self) -> torch.Tensor:
        """Multi-hot label matrix [n, C] (bool) of every listed clip."""
        y = torch.zeros(len(self.records), self.num_classes, dtype=torch.bool)
        for i, rec in enumerate(self.records):
            y[i, rec.labels] = True
        return y

    def load(self, i: int) -> dict[str, Any] | None:
        """Clip i as a sample dict, or None (counted in `problems`) when it is bad."""
        if i in self.bad:
            return None
        rec = self.records[i]
        try:
            wave = load_audio(rec.path, self.sample_rate, min_samples=self.min_samples)  # [n]
        except AudioLoadError as err:  # unreadable, non_finite or too_short
            return self._mark_bad(i, err.reason, str(err))
        n = wave.shape[0]
        peak = float(wave.abs().max())
        if not peak >= self.silence_peak:
            return self._mark_bad(i, "silent", f"{rec.path}: peak {peak:.2e}")
        offset = random_offset(n, self.clip_samples) if self.random_crop else 0
        target = torch.zeros(self.num_classes)
        target[rec.labels] = 1.0
        return {"wave": fix_length(wave, self.clip_samples, offset), "length": min(n, self.clip_samples),
                "target": target, "index": i}

    def _mark_bad(self, i: int, reason: str, detail: str) -> None:
        self.bad.add(i)
        self.problems.add(reason, self.records[i].where, detail)
        self.new_bad.append((i, reason, detail))
        return None

    def take_worker_report(self) -> list[tuple[int, str, str]]:
        """In a data worker: the clips found bad since the last call, as (index, reason, detail)."""
        found, self.new_bad = self.new_bad, []
        return found

    def merge_worker_report(self, found: list[tuple[int, str, str]]) -> None:
        """In the training process: count a worker's bad clips, each once (as if found here)."""
        for i, reason, detail in found:
            if i not in self.bad:
                self._mark_bad(i, reason, detail)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.records)
        for step in range(n):
            sample = self.load((i + step) % n)
            if sample is not None:
                return sample
        raise UserError(f"no readable clip among the {n} listed\n{self.problems.format()}",
                        fix="check the clip list and folders (the report above names the bad ones)")


def collate_clips(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples: wave [B, L], lengths [B], targets [B, C] (the trainer's `targets`), index [B]."""
    return {"wave": torch.stack([s["wave"] for s in samples]),
            "lengths": torch.tensor([s["length"] for s in samples]),
            "targets": torch.stack([s["target"] for s in samples]),
            "index": torch.tensor([s["index"] for s in samples])}
