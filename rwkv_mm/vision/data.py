"""LLaVA-format visual instruction data: records, the training dataset and its collate.

A LLaVA JSON file is a list of `{"id", "image" (optional, relative to the image root),
"conversations": [{"from": "human"|"gpt", "value": ...}, ...]}`. Bad samples (malformed
conversation, `image` not a path string, image path leaving the root, missing, corrupt or
oversized image) raise an error naming the sample id and path, or, with `on_error="skip"`, are
skipped and counted in `problems`. Images are decoded by `image_io.open_image` (through the
processor): any decoder failure, PIL's DecompressionBombError included, is such a bad sample.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rwkv_mm.constants import IGNORE_INDEX
from rwkv_mm.errors import UserError

from .conversation import (ChatTemplate, ConversationError, encode_conversation, to_training_pair,
                           validate_conversation)
from .image_io import ImageReadError

ON_ERROR = ("raise", "skip")


class SampleError(UserError):
    """A sample that cannot be used (the message names its id, and path when there is one).
    `reason` is the short category a skip is counted under."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None,
                 reason: str = "bad sample") -> None:
        self.reason = reason
        super().__init__(what, where, fix)


def resolve_image_path(root: Path, rel: str, owner: str) -> Path:
    """`root / rel`, refusing a value that is not a non-empty string, absolute paths and `..`
    that leave the image root. `owner` names the sample or question in errors ("sample 7")."""
    if not isinstance(rel, str) or not rel:
        raise SampleError(f"{owner}: 'image' is {json.dumps(rel)}; expected a path relative to the "
                          "image root (leave the key out for a text-only sample)", reason="bad image field")
    root_resolved = root.resolve()
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(root_resolved):
        raise SampleError(f"{owner}: image path {rel!r} leaves the image root {root}",
                          reason="image outside root")
    return path


@dataclass
class LoadReport:
    """What loading skipped and why (reason -> count, plus a few examples)."""

    problems: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, message: str) -> None:
        self.problems[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(message)

    def merge(self, other: "LoadReport") -> None:
        """Add what `other` counted (a data worker's report), as if its `add` calls were made here."""
        self.problems.update(other.problems)
        self.examples.extend(other.examples[:max(0, 5 - len(self.examples))])

    @property
    def skipped(self) -> int:
        return sum(self.problems.values())

    def summary(self) -> str:
        if not self.skipped:
            return "no samples skipped"
        reasons = ", ".join(f"{n} {r}" for r, n in self.problems.most_common())
        return f"{self.skipped} samples skipped ({reasons}); e.g. {self.examples[0]}"


def load_llava_json(path: str | Path, image_root: str | Path | None, on_error: str = "raise",
                    report: LoadReport | None = None) -> list[dict]:
    """Records of a LLaVA JSON file, validated (conversation shape, image path inside the root,
    image file present). `on_error`: "raise" or "skip" (then counted in `report`)."""
    path = Path(path)
    if on_error not in ON_ERROR:
        raise UserError(f"data.on_error={on_error!r}: expected raise or skip")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"LLaVA data file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"not valid JSON ({err})", where=str(path),
                        fix="data.data_path must be a LLaVA JSON list") from None
    if not isinstance(items, list):
        raise UserError(f"expected a JSON list of samples, got {type(items).__name__}", where=str(path),
                        fix="data.data_path must be a LLaVA JSON list")
    root = Path(image_root) if image_root else None
    report = report if report is not None else LoadReport()
    records = []
    for index, item in enumerate(items):
        sample_id = str(item.get("id", f"#{index}")) if isinstance(item, dict) else f"#{index}"
        try:
            if not isinstance(item, dict):
                raise ConversationError(f"{path}: item {index} is not an object")
            validate_conversation(item.get("conversations"), f"{sample_id} ({path}, item {index})")
            record = {"id": sample_id, "conversations": item["conversations"]}
            if "image" in item:
                where = f"sample {sample_id} ({path}, item {index})"
                if root is None:
                    raise SampleError(f"{where}: has an image but no image root was given")
                image = resolve_image_path(root, item["image"], where)
                if not image.is_file():
                    raise SampleError(f"{where}: image not found: {image}", reason="missing image")
                record["image"] = image
            records.append(record)
        except (ConversationError, SampleError) as err:
            if on_error == "raise":
                raise
            reason = "bad conversation" if isinstance(err, ConversationError) else err.reason
            report.add(reason, str(err))
    return records


class FeatureCache:
    """Tower features per image path, computed once (the tower is frozen in both stages and
    preprocessing is deterministic, so stage 1 and stage 2 epochs can share them)."""

    def __init__(self, tower, processor, max_items: int = 100_000) -> None:
        self.tower, self.processor, self.max_items = tower, processor, max_items
        self.store: dict[Path, torch.Tensor] = {}

    def __call__(self, path: Path) -> torch.Tensor:
        feats = self.store.get(path)
        if feats is None:
            device = next(self.tower.parameters()).device
            feats = self.tower(self.processor(path).unsqueeze(0).to(device))[0].float().cpu()
            if len(self.store) < self.max_items:
                self.store[path] = feats
        return feats  # [P, C]


class LlavaDataset(torch.utils.data.Dataset):
    """Tokenised samples: {"input_ids", "targets", and "pixels" [3,S,S] or "features" [P,C]}.

    Args:
        records: from `load_llava_json`.
        tokenizer: text tokenizer (World).
        num_image_tokens: P placeholders per image.
        processor: image -> pixels (used when `features` is None).
        features: optional FeatureCache (tower features instead of pixels).
        ctx_len: samples are truncated to ctx_len tokens (an image span cut by the truncation is
            an error / skip: the image would be partly seen).
        on_error: "raise" or "skip" (a failing sample is replaced by the next good one and counted).
    """

    def __init__(self, records: list[dict], tokenizer, num_image_tokens: int, processor=None,
                 features: FeatureCache | None = None, ctx_len: int = 2048,
                 template: ChatTemplate | None = None, image_position: str = "first",
                 on_error: str = "raise", report: LoadReport | None = None) -> None:
        self.records, self.tokenizer = records, tokenizer
        self.num_image_tokens, self.processor, self.features = num_image_tokens, processor, features
        self.ctx_len, self.template, self.image_position = ctx_len, template or ChatTemplate(), image_position
        self.on_error = on_error
        self.report = report if report is not None else LoadReport()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def needs_main_process(self) -> str | None:
        """Why data workers cannot read this dataset (None: they can)."""
        return "data.cache_features runs the vision tower inside the dataset" if self.features is not None else None

    def take_worker_report(self) -> LoadReport:
        """In a data worker: the samples skipped since the last call (then counted afresh)."""
        report, self.report = self.report, LoadReport()
        return report

    def merge_worker_report(self, report: LoadReport) -> None:
        """In the training process: add a worker's `take_worker_report()`."""
        self.report.merge(report)

    def encode(self, record: dict) -> dict:
        """One record -> tensors (raises SampleError/ConversationError naming the sample)."""
        has_image = "image" in record
        ids, is_answer = encode_conversation(record["conversations"], self.tokenizer, self.num_image_tokens,
                                             self.template, self.image_position, has_image=has_image,
                                             sample_id=record["id"])
        input_ids, targets = to_training_pair(ids, is_answer, self.ctx_len)
        sample = {"id": record["id"], "input_ids": torch.tensor(input_ids, dtype=torch.long),
                  "targets": torch.tensor(targets, dtype=torch.long)}
        if has_image:
            n_slots = int((sample["input_ids"] < 0).sum())
            if n_slots != self.num_image_tokens:
                raise SampleError(f"sample {record['id']}: ctx_len={self.ctx_len} cuts the image span "
                                  f"({n_slots} of {self.num_image_tokens} image tokens fit)",
                                  reason="image cut by ctx_len")
            try:
                if self.features is not None:
                    sample["features"] = self.features(record["image"])
                else:
                    sample["pixels"] = self.processor(record["image"])
            except ImageReadError as err:
                raise SampleError(f"sample {record['id']}: cannot read image {err.path} ({err.reason})",
                                  reason="unreadable image") from None
        return sample

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.records)):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                return self.encode(record)
            except (SampleError, ConversationError) as err:
                if self.on_error == "raise":
                    raise
                self.report.add(getattr(err, "reason", "bad conversation"), str(err))
        raise SampleError(f"every one of the {len(self.records)} samples failed to load "
                          f"({self.report.summary()})")


def collate_llava(samples: list[dict]) -> dict:
    """Right-pad to the longest sample: input_ids with 0, targets with IGNORE_INDEX; images of
    the samples that have one, in batch order ("images" [N,3,S,S] or "image_features" [N,P,C])."""
    T = max(len(s["input_ids"]) for s in samples)
    B = len(samples)
    input_ids = torch.zeros(B, T, dtype=torch.long)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for b, s in enumerate(samples):
        n = len(s["input_ids"])
        input_ids[b, :n] = s["input_ids"]
        targets[b, :n] = s["targets"]
    batch = {"input_ids": input_ids, "targets": targets, "ids": [s["id"] for s in samples]}
    pixels = [s["pixels"] for s in samples if "pixels" in s]
    feats = [s["features"] for s in samples if "features" in s]
    if pixels:
        batch["images"] = torch.stack(pixels)
    if feats:
        batch["image_features"] = torch.stack(feats)
    return batch
