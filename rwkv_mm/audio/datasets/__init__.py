"""Audio tagging datasets (AudioSet CSVs, AST JSON manifests) and their problem reports."""

from .audioset import (ClassList, ClipRecord, ProblemLog, index_clip_folders, read_class_labels,
                       read_clip_list, read_manifest, read_segments)
from .clips import AudioTaggingDataset, collate_clips

__all__ = ["AudioTaggingDataset", "ClassList", "ClipRecord", "ProblemLog", "collate_clips",
           "index_clip_folders", "read_class_labels", "read_clip_list", "read_manifest", "read_segments"]
