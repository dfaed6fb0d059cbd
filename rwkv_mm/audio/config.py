"""Recipe sections of audio tagging (`data:`, `features:`, `eval:`) and what they build."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rwkv_mm.errors import ConfigError, UserError, check_choice, check_float, check_int

from .datasets import AudioTaggingDataset, ClassList, ProblemLog, read_class_labels, read_clip_list
from .datasets.audioset import index_clip_folders
from .fbank import WINDOWS, FbankConfig
from .features import AST_MEAN, AST_STD, AudioFeatures, FeatureStats
from .synth import SynthConfig, build_synth


@dataclass
class AudioDataConfig:
    """Where clips and labels are. `train`/`eval` are AudioSet segment CSVs (clips looked up by
    YTID in `clip_dirs`) or AST JSON manifests (by extension).

    Attributes:
        class_labels: `class_labels_indices.csv`.
        train, eval: the two clip lists.
        clip_dirs: folders holding `<YTID>.wav|flac|ogg|mp3` (CSV lists only).
        balanced: draw training clips with AST's balanced weights (else a plain shuffle).
        random_crop: crop longer training clips at a random offset (evaluation: from the start).
        min_seconds, silence_peak: shorter / quieter (peak |x|) files are left out and reported.
        max_train_clips, max_eval_clips: use only the first N of a list (0 = all).
        synthetic: generate the synthetic sound-event set into `synthetic.out` first when it is
            missing (the paths above should point into that folder).
    """

    class_labels: str = "data/audioset/class_labels_indices.csv"
    train: str = "data/audioset/balanced_train_segments.csv"
    eval: str = "data/audioset/eval_segments.csv"
    clip_dirs: list[str] = field(default_factory=lambda: ["data/audioset/audio"])
    balanced: bool = True
    random_crop: bool = True
    min_seconds: float = 0.1
    silence_peak: float = 1e-4
    max_train_clips: int = 0
    max_eval_clips: int = 0
    synthetic: SynthConfig | None = None

    def __post_init__(self) -> None:
        for name in ("class_labels", "train", "eval"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(name, getattr(self, name), "a file path")
        check_float(self, "min_seconds", min=0.0)
        check_float(self, "silence_peak", min=0.0)
        check_int(self, "max_train_clips", min=0)
        check_int(self, "max_eval_clips", min=0)


@dataclass
class AudioFeaturesConfig:
    """Kaldi fbank (AST's settings by default) and its normalisation (x - mean) / (2·std).

    `target_frames` fixes the clip length: clips are cut/padded to the samples that give exactly
    that many frames (1024 frames = 164,080 samples = 10.255 s at 16 kHz). `stats` names a JSON written by
    `rwkv-mm audio stats` whose mean/std replace `norm_mean`/`norm_std` (AST's AudioSet values).
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    target_frames: int = 1024
    low_freq: float = 20.0
    high_freq: float = 0.0
    window: str = "hanning"
    norm_mean: float = AST_MEAN
    norm_std: float = AST_STD
    stats: str | None = None

    def __post_init__(self) -> None:
        check_int(self, "sample_rate", min=1000)
        check_int(self, "num_mel_bins", min=4)
        check_float(self, "frame_length_ms", gt=0.0)
        check_float(self, "frame_shift_ms", gt=0.0)
        check_int(self, "target_frames", min=1)
        check_float(self, "low_freq", min=0.0)
        check_float(self, "high_freq")
        check_choice(self, "window", WINDOWS)
        check_float(self, "norm_mean")
        check_float(self, "norm_std", gt=0.0)
        self.fbank()  # the fbank's own checks (window of >= 2 samples, low_freq < high_freq <= Nyquist)

    def fbank(self) -> FbankConfig:
        return FbankConfig(sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                           frame_length_ms=self.frame_length_ms, frame_shift_ms=self.frame_shift_ms,
                           low_freq=self.low_freq, high_freq=self.high_freq, window=self.window)

    def clip_samples(self) -> int:
        return self.fbank().num_samples(self.target_frames)

    def build(self) -> AudioFeatures:
        stats = (FeatureStats.load(self.stats) if self.stats
                 else FeatureStats(self.norm_mean, self.norm_std, source="features.norm_mean/norm_std"))
        return AudioFeatures(self.fbank(), self.target_frames, stats)


@dataclass
class AudioEvalConfig:
    """Evaluation (mAP/AUC on the eval list) and weight averaging.

    Attributes:
        batch_size: clips per forward pass when scoring.
        every: also compute mAP every N steps (0 = only at the end); written to `map.jsonl`.
        max_clips: clips used by those periodic evaluations (0 = all); the final one uses all.
        snapshot_every: save the weights as `checkpoints/step_<N>.pt` every N steps (0 = off).
        keep_snapshots: snapshots kept (older ones are deleted).
        average_last: at the end, average the last K snapshots into `model_avg.pt` and score it.
    """

    batch_size: int = 32
    every: int = 0
    max_clips: int = 0
    snapshot_every: int = 0
    keep_snapshots: int = 5
    average_last: int = 0

    def __post_init__(self) -> None:
        check_int(self, "batch_size", min=1)
        for name in ("every", "max_clips", "snapshot_every", "average_last"):
            check_int(self, name, min=0)
        check_int(self, "keep_snapshots", min=1)


@dataclass
class AudioSplits:
    """What `load_splits` returns."""

    classes: ClassList
    train: AudioTaggingDataset
    eval: AudioTaggingDataset
    train_problems: ProblemLog
    eval_problems: ProblemLog


def load_splits(data: AudioDataConfig, features: AudioFeaturesConfig) -> AudioSplits:
    """Read the class list and both clip lists (generating the synthetic set first if asked)."""
    if data.synthetic is not None:
        build_synth(data.synthetic)
    classes = read_class_labels(data.class_labels)
    clip_index = None
    if any(Path(p).suffix.lower() == ".csv" for p in (data.train, data.eval)):
        if not data.clip_dirs:
            raise UserError("data.clip_dirs is empty", fix="a segment CSV needs the folders holding its clips")
        clip_index = index_clip_folders(list(data.clip_dirs))
    out = {}
    for split, path, limit in (("train", data.train, data.max_train_clips), ("eval", data.eval, data.max_eval_clips)):
        problems = ProblemLog()
        records = read_clip_list(path, classes, data.clip_dirs, problems, clip_index)
        if limit > 0:
            records = records[:limit]
        if not records:
            raise UserError(f"no usable clips\n{problems.format()}", where=f"data.{split}={path}")
        out[split] = (AudioTaggingDataset(records, len(classes), features.clip_samples(), features.sample_rate,
                                          random_crop=data.random_crop and split == "train",
                                          min_seconds=data.min_seconds, silence_peak=data.silence_peak,
                                          problems=problems, window_samples=features.fbank().window_size),
                      problems)
    return AudioSplits(classes, out["train"][0], out["eval"][0], out["train"][1], out["eval"][1])
