"""A plain list of frames, as GenD and many other repositories keep their splits: ``<json_root>/<Name>.csv``.

Columns (header row required, any order): ``path`` (relative to the data root; ``\\`` or ``/``), ``label``
(``0`` real / ``1`` fake, or a label string of the label dict such as ``FF-DF``), optional ``video`` (default: the
frame's directory, as the DeepfakeBench reader's video id) and optional ``split`` (``train``/``val``/``test``;
without it every row is in ``test``). Other columns are refused by name, so a misspelt header cannot pass
silently. Videos keep the order of their first row; frames whose names are all integers are ordered numerically,
others as listed; ``frame_num`` takes evenly spaced frames per video and the data-root rules are the DeepfakeBench
reader's (checked before any frame is opened). A fake frame's forgery mask follows DeepfakeBench's rule, as in
the JSON reader (its ``frames`` folder replaced by ``masks``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from mergekit_clip.data.deepfakebench import (
    ALLOW_OUTSIDE_HINT,
    SPLITS,
    DatasetError,
    FrameRecord,
    FrameRoot,
    VideoIdMode,
    canonical_labels,
    frame_number,
    lookup_label,
    normalize_frame_path,
    resolve_mask,
    select_frames,
    video_id,
)

COLUMNS = ("path", "label", "video", "split")


def frame_list_path(dataset: str, json_root: str | os.PathLike) -> Path:
    return Path(json_root) / f"{dataset}.csv"


def _label(raw: str, labels: Mapping[str, int], where: str) -> int:
    if raw.strip() in ("0", "1"):
        return int(raw)
    value = lookup_label(raw, labels)
    if value is None:
        raise DatasetError(f"{where}: label {raw!r} is neither 0/1 nor in the label dict (known: {sorted(labels)})")
    return value


def load_frames(
    dataset: str,
    split: str,
    *,
    json_root: str | os.PathLike,
    data_root: str | os.PathLike,
    frame_num: int | None = None,
    label_dict: Mapping[str, int] | None = None,
    compression: str = "c23",  # accepted for a uniform call; a frame list has no compression levels
    video_id_mode: VideoIdMode = "full",
    allow_outside_root: bool = False,
) -> list[FrameRecord]:
    """The frames of ``split`` listed in ``<json_root>/<dataset>.csv`` (errors name the file and the row)."""
    if split not in SPLITS:
        raise DatasetError(f"{dataset}: unknown split {split!r} (choose from {list(SPLITS)})")
    source = frame_list_path(dataset, json_root)
    labels, root = canonical_labels(label_dict), FrameRoot(data_root, allow_outside_root)
    try:
        with open(source, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{source}: cannot read the frame list ({e})") from e
    unknown = [c for c in header if c not in COLUMNS]
    if unknown or not {"path", "label"} <= set(header):
        raise DatasetError(f"{source}: columns {header}; expected path,label and optionally video,split")
    videos: dict[str, list[tuple[str, int]]] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{source}: row {number}"
        row_split = row["split"] if "split" in header else "test"
        if row_split not in SPLITS:
            raise DatasetError(f"{where}: split {row_split!r} (choose from {list(SPLITS)})")
        rel = normalize_frame_path(row["path"])
        problem = root.problem(rel, resolve=False)
        if problem:
            raise DatasetError(f"{where}: frame path {row['path']!r} {problem}; {ALLOW_OUTSIDE_HINT}")
        if row_split != split:
            continue
        vid = row.get("video") or video_id(rel)
        videos.setdefault(vid, []).append((rel, _label(row["label"], labels, where)))
    records: list[FrameRecord] = []
    for vid, frames in videos.items():
        if len({label for _, label in frames}) > 1:
            raise DatasetError(f"{source}: video {vid!r} has frames labelled both real and fake")
        paths = [rel for rel, _ in frames]
        if all(frame_number(p) is not None for p in paths):
            paths.sort(key=lambda p: frame_number(p))
        shown = PurePosixPath(vid).name if video_id_mode == "parent" else vid
        for rel in select_frames(paths, frame_num):
            problem = root.problem(rel)
            if problem:
                raise DatasetError(f"{source}: video {vid!r}: frame path {rel!r} {problem}; {ALLOW_OUTSIDE_HINT}")
            label = frames[0][1]
            mask = resolve_mask(rel, label, root, f"{source}: video {vid!r}")
            records.append(FrameRecord(root.path(rel), label, shown, dataset, mask))
    if not records:
        raise DatasetError(f"{source}: split {split!r} of {dataset} is empty")
    return records
