"""Label groups of frame records (``FF-DF``, ``FF-F2F``, ... in FaceForensics++), read from the dataset JSON.

The DeepfakeBench reader's records carry the label, not the group a video is filed under; per-group AUC (the fakes
of each manipulation against the shared reals, ``mergekit_clip.metrics.group_auc_scores``) needs the group. It is
looked up by video: every frame of a video has its JSON group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mergekit_clip.data.deepfakebench import (
    dataset_json_path,
    iter_videos,
    normalize_frame_path,
    read_dataset_json,
    video_id,
)


@dataclass(frozen=True)
class GroupedRecord:
    """A frame record plus the label group of its video (``""`` when the JSON does not name it)."""

    path: Path
    label: int
    video_id: str
    dataset: str
    label_group: str
    mask: Path | None = None  # the frame's forgery mask (FrameRecord.mask), for the boundary figure


def with_label_groups(
    records: Sequence, dataset: str, split: str, json_root: str | os.PathLike, compression: str = "c23"
) -> list[GroupedRecord]:
    """``records`` (full video ids, as ``load_frames`` gives by default) with their videos' label groups."""
    groups = read_dataset_json(dataset, json_root)
    source = str(dataset_json_path(dataset, json_root))
    by_video: dict[str, str] = {}
    for video in iter_videos(dataset, groups, split, compression, source=source):
        for raw in video.frames[:1]:  # every frame of a video lies in one folder: the first names it
            by_video[video_id(normalize_frame_path(str(raw)))] = video.label_group
    return [
        GroupedRecord(
            r.path, r.label, r.video_id, r.dataset, by_video.get(str(r.video_id), ""), getattr(r, "mask", None)
        )
        for r in records
    ]
