"""Dataset readers: one registry, one dispatch.

A format is a file naming convention in the JSON root plus a reader that turns one split of it into
:class:`~mergekit_clip.data.deepfakebench.FrameRecord` s. :func:`load_frames` picks the format whose file exists for
the dataset, so every caller (training, scoring, soups, merge statistics, studies, benchmarks) reads any registered
format with the same call::

    records = load_frames("Celeb-DF-v2", "test", json_root=..., data_root=..., frame_num=8)

Adding a format is one module here with a reader and one :func:`register_format` line below. Every reader keeps
the same trust rules: frame paths must stay under ``data_root`` (unless ``allow_outside_root``), checked before any
frame file is opened; labels are 0 = real, 1 = fake; a fake frame's forgery mask (``FrameRecord.mask``) follows
DeepfakeBench's rule, the frame path with its ``frames`` folder replaced by ``masks`` (see
:mod:`mergekit_clip.data.masks`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mergekit_clip.data.deepfakebench import DatasetError, FrameRecord


@dataclass(frozen=True)
class DatasetFormat:
    """``locate(dataset, json_root)``: the file that would hold ``dataset``; ``reader(dataset, split, **kw)``.

    ``masks``: whether the format gives fake frames their forgery mask (``FrameRecord.mask``, DeepfakeBench's rule
    by default); a format that says False has none, and a mode that needs masks refuses its fake frames.
    """

    name: str
    locate: Callable[[str, str | os.PathLike], Path]
    reader: Callable[..., list[FrameRecord]]
    description: str
    masks: bool = True

    def source(self, dataset: str, json_root: str | os.PathLike) -> Path:
        return Path(self.locate(dataset, json_root))


FORMATS: dict[str, DatasetFormat] = {}


def register_format(fmt: DatasetFormat) -> DatasetFormat:
    """Add ``fmt``; registering the same object again is a no-op, another one under a taken name or suffix raises."""
    for other in FORMATS.values():
        if other is fmt:
            return fmt
        if other.name == fmt.name:
            raise ValueError(f"dataset format {fmt.name!r} is already registered ({other.description})")
    FORMATS[fmt.name] = fmt
    return fmt


def dataset_format(dataset: str, json_root: str | os.PathLike) -> DatasetFormat:
    """The format whose file exists for ``dataset`` in ``json_root`` (an error lists the files looked for)."""
    found = [f for f in FORMATS.values() if f.source(dataset, json_root).is_file()]
    if len(found) == 1:
        return found[0]
    tried = ", ".join(str(f.source(dataset, json_root)) for f in FORMATS.values())
    if not found:
        raise DatasetError(f"dataset {dataset!r} not found: none of {tried} exists")
    raise DatasetError(f"dataset {dataset!r} is ambiguous: {tried} all exist; keep one")


def load_frames(dataset: str, split: str, *, json_root: str | os.PathLike, **options) -> list[FrameRecord]:
    """The frames of ``dataset``/``split`` from whichever registered format holds it (see each reader's options)."""
    fmt = dataset_format(dataset, json_root)
    records = fmt.reader(dataset, split, json_root=json_root, **options)
    return records if fmt.masks else [replace(r, mask=None) for r in records]


def _register_builtin() -> None:
    from mergekit_clip.data import deepfakebench
    from mergekit_clip.data.formats import frame_list

    register_format(DatasetFormat("deepfakebench", deepfakebench.dataset_json_path, deepfakebench.load_frames,
                                  "<Name>.json, DeepfakeBench's layout (docs/data.md)"))  # fmt: skip
    register_format(DatasetFormat("frame_list", frame_list.frame_list_path, frame_list.load_frames,
                                  "<Name>.csv with columns path,label[,video][,split] (docs/data.md)"))  # fmt: skip


_register_builtin()
