"""Dataset formats: one registry, one dispatch, and each format owns its dataset's identity.

A format is a file naming convention in the JSON root plus a reader that turns one split of it into
:class:`~mergekit_clip.data.deepfakebench.FrameRecord` s. :func:`load_frames` picks the format whose file exists for
the dataset, so every caller (training, scoring, soups, merge statistics, studies, benchmarks) reads any registered
format with the same call::

    records = load_frames("Celeb-DF-v2", "test", json_root=..., data_root=..., frame_num=8)

A dataset's identity is its format's business too: :func:`dataset_identity` gives the files the dataset is read
from and their sha256, which is what resume checks, score and statistics caches, provenance and dry runs record
(no caller builds a ``<Name>.json`` path itself). :func:`dataset_videos` lists a dataset's videos as they are
written (what ``data validate`` and ``data summary`` walk).

Adding a format is one module here (``locate``, ``load_frames``, ``videos``, ``names``) and one
:func:`register_format` line below. Every reader keeps the same trust rules: frame paths must stay under
``data_root`` (unless ``allow_outside_root``), checked before any frame file is opened; labels are 0 = real,
1 = fake; a fake frame's forgery mask (``FrameRecord.mask``) follows DeepfakeBench's rule, the frame path with its
``frames`` folder replaced by ``masks`` (see :mod:`mergekit_clip.data.masks`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mergekit_clip.data.deepfakebench import DatasetError, DatasetVideos, FrameRecord, lookup_label
from mergekit_clip.digest import file_sha256
from mergekit_clip.registry import add_entry, get_entry


@dataclass(frozen=True)
class DatasetFormat:
    """``locate(dataset, json_root)``: the file that would hold ``dataset``; ``reader(dataset, split, **kw)``;
    ``videos(dataset, json_root, compression)``: :class:`DatasetVideos`; ``names(json_root)``: the datasets held;
    ``label_value(label, canonical label dict)``: 0/1 of a written label, None when unknown.

    ``masks``: whether the format gives fake frames their forgery mask (``FrameRecord.mask``, DeepfakeBench's rule
    by default); a format that says False has none, and a mode that needs masks refuses its fake frames.
    """

    name: str
    locate: Callable[[str, str | os.PathLike], Path]
    reader: Callable[..., list[FrameRecord]]
    description: str
    videos: Callable[..., DatasetVideos]
    names: Callable[[str | os.PathLike], list[str]]
    label_value: Callable[[Any, Mapping[str, int]], int | None] = lookup_label
    masks: bool = True

    def source(self, dataset: str, json_root: str | os.PathLike) -> Path:
        return Path(self.locate(dataset, json_root))


@dataclass(frozen=True)
class DatasetIdentity:
    """The files ``dataset`` is read from (absolute paths) and their sha256: what makes two reads the same."""

    dataset: str
    format: str
    files: dict[str, str]

    @property
    def digest(self) -> str:
        """The file's sha256 (``sha256sum``'s value) for a one-file dataset; else one sha256 over the files' names
        and contents. Never their folder: a moved JSON root keeps its caches."""
        if len(self.files) == 1:
            return next(iter(self.files.values()))
        lines = "".join(f"{Path(f).name}\0{sha}\n" for f, sha in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()


FORMATS: dict[str, DatasetFormat] = {}


def register_format(fmt: DatasetFormat) -> DatasetFormat:
    """Add ``fmt``; registering the same object again is a no-op, another one under a taken name raises."""
    return add_entry(FORMATS, fmt.name, fmt, "dataset format")


def get_format(name: str) -> DatasetFormat:
    return get_entry(FORMATS, name, "dataset format")


def dataset_format(dataset: str, json_root: str | os.PathLike) -> DatasetFormat:
    """The format whose file exists for ``dataset`` in ``json_root`` (an error lists the files looked for)."""
    found = [f for f in FORMATS.values() if f.source(dataset, json_root).is_file()]
    if len(found) == 1:
        return found[0]
    tried = ", ".join(str(f.source(dataset, json_root)) for f in FORMATS.values())
    if not found:
        raise DatasetError(f"dataset {dataset!r} not found: none of {tried} exists")
    raise DatasetError(f"dataset {dataset!r} is ambiguous: {tried} all exist; keep one")


def dataset_identity(dataset: str, json_root: str | os.PathLike) -> DatasetIdentity:
    """The files ``dataset`` is read from and their sha256, whichever format holds it (DatasetError if none)."""
    fmt = dataset_format(dataset, json_root)
    file = fmt.source(dataset, json_root).absolute()
    return DatasetIdentity(dataset, fmt.name, {str(file): file_sha256(file)})


def list_datasets(json_root: str | os.PathLike) -> list[str]:
    """Every dataset held in ``json_root`` in any registered format (sorted); raises if the folder does not exist."""
    if not Path(json_root).is_dir():
        raise DatasetError(f"dataset folder {json_root} does not exist")
    return sorted({name for fmt in FORMATS.values() for name in fmt.names(json_root)})


def dataset_videos(dataset: str, json_root: str | os.PathLike, compression: str = "c23") -> DatasetVideos:
    """``dataset``'s videos as written, whichever format holds it (raises DatasetError if it cannot be read)."""
    return dataset_format(dataset, json_root).videos(dataset, json_root, compression)


def load_frames(dataset: str, split: str, *, json_root: str | os.PathLike, **options) -> list[FrameRecord]:
    """The frames of ``dataset``/``split`` from whichever registered format holds it (see each reader's options)."""
    fmt = dataset_format(dataset, json_root)
    records = fmt.reader(dataset, split, json_root=json_root, **options)
    return records if fmt.masks else [replace(r, mask=None) for r in records]


def _register_builtin() -> None:
    from mergekit_clip.data import deepfakebench
    from mergekit_clip.data.formats import frame_list

    register_format(DatasetFormat(
        "deepfakebench", deepfakebench.dataset_json_path, deepfakebench.load_frames,
        "<Name>.json, DeepfakeBench's layout (docs/data.md)", deepfakebench.dataset_videos,
        deepfakebench.list_datasets))  # fmt: skip
    register_format(DatasetFormat(
        "frame_list", frame_list.frame_list_path, frame_list.load_frames,
        "<Name>.csv with columns path,label[,video][,split] (docs/data.md)", frame_list.dataset_videos,
        frame_list.list_datasets, frame_list.label_value))  # fmt: skip


_register_builtin()
