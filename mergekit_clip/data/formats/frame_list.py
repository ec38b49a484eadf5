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
from typing import Any

from mergekit_clip.data.deepfakebench import (
    ALLOW_OUTSIDE_HINT,
    SPLITS,
    DatasetError,
    DatasetVideos,
    FrameRecord,
    FrameRoot,
    VideoEntry,
    VideoIdMode,
    canonical_labels,
    frame_number,
    lookup_label,
    normalize_frame_path,
    video_id,
    video_records,
)

COLUMNS = ("path", "label", "video", "split")


def frame_list_path(dataset: str, json_root: str | os.PathLike) -> Path:
    return Path(json_root) / f"{dataset}.csv"


def list_datasets(json_root: str | os.PathLike) -> list[str]:
    return sorted(p.stem for p in Path(json_root).glob("*.csv") if not p.name.startswith("."))


def label_value(raw: Any, labels: Mapping[str, int]) -> int | None:
    """0/1 of a written label: ``0``/``1`` as such, anything else through the label dict (None when unknown)."""
    if str(raw).strip() in ("0", "1"):
        return int(raw)
    return lookup_label(raw, labels)


def _read_rows(source: Path) -> list[dict[str, str]]:
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
    return rows


Row = tuple[int, str, str]  # (row number in the file, path as written, label as written)


def _videos(source: Path) -> dict[tuple[str, str], list[Row]]:
    """Rows grouped by (split, video), videos in order of their first row; a bad split is refused by row."""
    videos: dict[tuple[str, str], list[Row]] = {}
    for number, row in enumerate(_read_rows(source), start=2):  # row 1 is the header
        split = row.get("split") or "test"
        if split not in SPLITS:
            raise DatasetError(f"{source}: row {number}: split {split!r} (choose from {list(SPLITS)})")
        vid = row.get("video") or video_id(normalize_frame_path(row["path"]))
        videos.setdefault((split, vid), []).append((number, row["path"], row["label"]))
    return videos


def dataset_videos(dataset: str, json_root: str | os.PathLike, compression: str = "c23") -> DatasetVideos:
    """The listed videos as written (a video's label is its first row's)."""
    videos = _videos(frame_list_path(dataset, json_root))
    entries = [VideoEntry(dataset, rows[0][2], split, None, vid, rows[0][2], tuple(p for _, p, _ in rows))
               for (split, vid), rows in videos.items()]  # fmt: skip
    return DatasetVideos(entries, list(dict.fromkeys(e.split for e in entries)))


def _label(raw: str, labels: Mapping[str, int], where: str) -> int:
    value = label_value(raw, labels)
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
    follow_symlinks: bool = True,
) -> list[FrameRecord]:
    """The frames of ``split`` listed in ``<json_root>/<dataset>.csv`` (errors name the file and the video)."""
    if split not in SPLITS:
        raise DatasetError(f"{dataset}: unknown split {split!r} (choose from {list(SPLITS)})")
    source = frame_list_path(dataset, json_root)
    labels, root = canonical_labels(label_dict), FrameRoot(data_root, allow_outside_root, follow_symlinks)
    videos = _videos(source)
    for rows in videos.values():  # every row's path, before any frame is opened
        for number, raw, _ in rows:
            problem = root.problem(normalize_frame_path(raw), resolve=False)
            if problem:
                raise DatasetError(f"{source}: row {number}: frame path {raw!r} {problem}; {ALLOW_OUTSIDE_HINT}")
    records: list[FrameRecord] = []
    for (_, vid), rows in ((key, rows) for key, rows in videos.items() if key[0] == split):
        if len({_label(raw, labels, f"{source}: row {n}") for n, _, raw in rows}) > 1:
            raise DatasetError(f"{source}: video {vid!r} has frames labelled both real and fake")
        label = _label(rows[0][2], labels, f"{source}: row {rows[0][0]}")
        paths = [normalize_frame_path(p) for _, p, _ in rows]
        if all(frame_number(p) is not None for p in paths):
            paths.sort(key=lambda p: frame_number(p))
        shown = PurePosixPath(vid).name if video_id_mode == "parent" else vid
        records += video_records(paths, label, lambda _, shown=shown: shown, dataset, frame_num, root,
                                 f"{source}: video {vid!r}")  # fmt: skip
    if not records:
        raise DatasetError(f"{source}: split {split!r} of {dataset} is empty")
    return records
