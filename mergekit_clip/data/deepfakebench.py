"""Reader for DeepfakeBench-format dataset JSONs (docs/data.md); registered as the ``deepfakebench`` format of
:mod:`mergekit_clip.data.formats`, whose ``load_frames`` every caller uses.

One JSON per dataset, ``<json_root>/<Name>.json``::

    {Name: {label_group: {split: {video: {"label": str, "frames": [path, ...]}}}}}

For the FaceForensics++ family a compression level (``raw``/``c23``/``c40``) sits between the split and the
videos. We detect it structurally (a split whose children are compression-level dicts of videos), so any dataset
laid out that way works under its own name; ``<Name>_c40`` is read as ``<Name>.json`` at level ``c40`` as in
DeepfakeBench. The label of a video is ``label_dict[video["label"]]``: the group key is not the label.

Differences from DeepfakeBench's loader, on purpose: ``frame_num`` takes evenly spaced frames (DeepfakeBench takes
the first N), frames are ordered by their integer name, and the video id is the full normalised video directory
(``video_id_mode="parent"`` reproduces DeepfakeBench's pooling on the parent folder name).

Trust rules (both checked before any frame file is opened):

- Every frame path must stay under the data root: an absolute path or a ``..`` that climbs above the root is an
  error naming the JSON file, the video and the path, unless the user opts in with ``allow_outside_root``
  (``--allow-outside-root``, ``data.allow_outside_root``). Symlinks inside the root are followed (labs keep
  datasets as links to shared storage); ``follow_symlinks=False`` (``--no-follow-symlinks``,
  ``data.follow_symlinks: false``) also refuses a link that resolves outside the root (see :class:`FrameRoot`).
- Label strings are looked up after :func:`mergekit_clip.detector.labels.canonical_label` (strip + casefold), in
  the reader and in ``data validate`` alike: ``" ff-df"`` is ``FF-DF``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple

from mergekit_clip.detector.labels import canonical_label, canonical_label_dict

SPLITS = ("train", "val", "test")
COMPRESSION_LEVELS = ("raw", "c23", "c40")
FF_FAMILY = ("FaceForensics++", "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "DeepFakeDetection", "FaceShifter")
VideoIdMode = Literal["full", "parent"]

_FAKE = (
    "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FF-FH", "FF-SH", "DFD_fake", "CelebDFv1_fake", "CelebDFv2_fake",
    "DFDCP_FakeA", "DFDCP_FakeB", "DFDC_Fake", "DF_fake", "UADFV_Fake", "roop_Fake",
)  # fmt: skip
_REAL = (
    "FF-real", "DFD_real", "CelebDFv1_real", "CelebDFv2_real", "DFDCP_Real", "DFDC_Real", "DF_real", "UADFV_Real",
    "roop_Real",
)  # fmt: skip
# DeepfakeBench's default label dictionary: real = 0, fake = 1.
DEFAULT_LABEL_DICT: dict[str, int] = {**{k: 0 for k in _REAL}, **{k: 1 for k in _FAKE}}

_INT_NAME = re.compile(r"^[0-9]+$")


class DatasetError(ValueError):
    """A dataset JSON that cannot be read as asked (the message names the dataset, split, file or video)."""


@dataclass(frozen=True)
class FrameRecord:
    """One frame: its resolved path, integer label (real 0, fake 1), video id and dataset name.

    ``mask``: a fake frame's forgery mask path by DeepfakeBench's rule (:func:`mask_rel_path`), checked under the
    data root like the frame but not opened (the file may be missing: :func:`mergekit_clip.data.masks.require_masks`
    counts those); None for real frames (their mask is all zero) and for frames or formats without masks.
    """

    path: Path
    label: int
    video_id: str
    dataset: str
    mask: Path | None = None


@dataclass(frozen=True)
class VideoEntry:
    """One video as stored in the JSON, before label mapping and frame selection (what the validator walks)."""

    dataset: str
    label_group: str
    split: str
    compression: str | None
    name: str
    label: Any
    frames: tuple[Any, ...]


class DatasetVideos(NamedTuple):
    """A dataset's videos of the known splits as written, and every split name the file uses (unknown ones too)."""

    videos: list[VideoEntry]
    splits: list[str]


def split_dataset_name(dataset: str) -> tuple[str, str | None]:
    """``"FF-DF_c40"`` -> ``("FF-DF", "c40")``; names without a level suffix give ``(name, None)``."""
    for level in COMPRESSION_LEVELS:
        if dataset.endswith(f"_{level}"):
            return dataset[: -len(level) - 1], level
    return dataset, None


def dataset_json_path(dataset: str, json_root: str | os.PathLike) -> Path:
    base, _ = split_dataset_name(dataset)
    return Path(json_root) / f"{base}.json"


def list_datasets(json_root: str | os.PathLike) -> list[str]:
    """Names of the dataset JSONs under ``json_root`` (sorted); raises if the folder does not exist."""
    root = Path(json_root)
    if not root.is_dir():
        raise DatasetError(f"dataset JSON folder {root} does not exist")
    return sorted(p.stem for p in root.glob("*.json") if not p.name.startswith("."))


def read_dataset_json(dataset: str, json_root: str | os.PathLike) -> dict[str, Any]:
    """The ``{label_group: {split: ...}}`` mapping of ``dataset`` (its top-level key must be the base name)."""
    path = dataset_json_path(dataset, json_root)
    base, _ = split_dataset_name(dataset)
    if not path.is_file():
        known = list_datasets(json_root) if Path(json_root).is_dir() else []
        raise DatasetError(f"unknown dataset {dataset!r}: {path} does not exist (available: {known})")
    from mergekit_clip.structured import StructuredFileError, read_json

    try:
        doc = read_json(path, walk=False)  # nesting past Python's parser: one error (the reader checks each node)
    except StructuredFileError as e:
        raise DatasetError(str(e)) from e
    if not isinstance(doc, dict) or base not in doc:
        keys = list(doc) if isinstance(doc, dict) else type(doc).__name__
        raise DatasetError(f"{path}: expected a top-level key {base!r}, found {keys}")
    groups = doc[base]
    if not isinstance(groups, dict):
        raise DatasetError(f"{path}: {base!r} must map label groups to splits, got {type(groups).__name__}")
    return groups


def _is_video(value: Any) -> bool:
    return isinstance(value, dict) and "frames" in value


def _is_compression_level(split_value: dict[str, Any]) -> bool:
    # A split nests compression levels when every child is a level name holding a dict of videos.
    return bool(split_value) and all(
        k in COMPRESSION_LEVELS and isinstance(v, dict) and not _is_video(v) for k, v in split_value.items()
    )


def iter_videos(
    dataset: str,
    groups: Mapping[str, Any],
    split: str,
    compression: str = "c23",
    *,
    source: str = "",
) -> Iterator[VideoEntry]:
    """Every video of ``split`` across label groups, at ``compression`` where the split nests levels.

    A ``<Name>_c40``-style name overrides ``compression``. A requested level that a nested split lacks is an
    error naming the levels it has.
    """
    _, alias_level = split_dataset_name(dataset)
    level = alias_level or compression
    for group, splits in groups.items():
        if not isinstance(splits, dict):
            raise DatasetError(f"{source}: label group {group!r} must map splits to videos")
        videos = splits.get(split)
        if videos is None:
            continue
        if not isinstance(videos, dict):
            raise DatasetError(f"{source}: {group}/{split} must be a dict of videos")
        used: str | None = None
        if _is_compression_level(videos):
            if level not in videos:
                raise DatasetError(
                    f"{source}: {dataset} {group}/{split} has compression levels {sorted(videos)}, not {level!r}"
                )
            used, videos = level, videos[level]
        for name, video in videos.items():
            if not _is_video(video):
                raise DatasetError(f"{source}: video {group}/{split}/{name} has no 'frames' list")
            frames = video["frames"]
            if not isinstance(frames, list):
                raise DatasetError(f"{source}: video {group}/{split}/{name}: 'frames' must be a list")
            yield VideoEntry(dataset, group, split, used, str(name), video.get("label"), tuple(frames))


def dataset_videos(dataset: str, json_root: str | os.PathLike, compression: str = "c23"):
    """The videos of every known split of ``dataset`` as the JSON writes them, and every split name it uses."""
    groups = read_dataset_json(dataset, json_root)
    source = str(dataset_json_path(dataset, json_root))
    splits = list(dict.fromkeys(s for g in groups.values() if isinstance(g, dict) for s in g))
    videos = [v for split in SPLITS for v in iter_videos(dataset, groups, split, compression, source=source)]
    return DatasetVideos(videos, splits)


def normalize_frame_path(raw: str) -> str:
    """Forward slashes, no leading ``./``, no empty or ``.`` components: ``.\\a\\\\b/0.png`` -> ``a/b/0.png``."""
    text = str(raw).strip().replace("\\", "/")
    absolute = text.startswith("/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    return ("/" if absolute else "") + "/".join(parts)


def resolve_frame_path(raw: str, data_root: str | os.PathLike) -> Path:
    """A JSON frame path joined to ``data_root`` (absolute paths are kept; :class:`FrameRoot` decides if allowed)."""
    return Path(data_root) / normalize_frame_path(raw)


_DRIVE = re.compile(r"^[A-Za-z]:(/|$)")
ALLOW_OUTSIDE_HINT = "pass --allow-outside-root (config and study files: data.allow_outside_root: true) to read it"


def lexical_path_problem(rel: str) -> str | None:
    """Why a normalised frame path leaves its root whatever the file system holds (absolute, ``..``), or None."""
    if rel.startswith("/") or _DRIVE.match(rel):
        return "is an absolute path"
    depth = 0
    for part in rel.split("/"):
        depth += -1 if part == ".." else 1
        if depth < 0:
            return "climbs above the data root through '..'"
    return None


class FrameRoot:
    """The folder frame paths must stay under.

    Containment is lexical and always strict: an absolute path or a ``..`` that climbs above the root is refused
    before anything is opened, and :meth:`path` joins the lexically normalised path, so no ``..`` ever reaches the
    file system (where a ``..`` after a symlink would climb out of the link's target). Symlinks inside the root are
    followed by default, because DeepfakeBench roots are usually folders of links to shared storage
    (``datasets/FaceForensics++ -> /mnt/storage/FF++``). ``follow_symlinks=False`` is the strict mode: every link is
    resolved (``os.path.realpath`` once per directory, one ``lstat`` per file; nothing opened) and one pointing out
    of the root is refused. ``allow_outside_root`` accepts everything.
    """

    def __init__(
        self, data_root: str | os.PathLike | None, allow_outside_root: bool = False, follow_symlinks: bool = True
    ):
        self.root = None if data_root is None else Path(data_root)
        self.real = None if data_root is None else os.path.realpath(data_root)
        self.allow_outside_root = allow_outside_root
        self.follow_symlinks = follow_symlinks
        self._dirs: dict[str, str] = {}

    def _inside(self, real: str) -> bool:
        return real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)

    def problem(self, rel: str, *, resolve: bool = True) -> str | None:
        """Why the normalised path ``rel`` is not under the root (None if it is, or if the user allowed it).

        ``resolve=False`` checks only what the path says (absolute, ``..``), not where its symlinks point; so does
        every check when symlinks are followed.
        """
        if self.allow_outside_root:
            return None
        lexical = lexical_path_problem(rel)
        if lexical or not resolve or self.follow_symlinks or self.real is None:
            return lexical
        directory, name = posixpath.split(rel)
        real_dir = self._dirs.get(directory)
        if real_dir is None:
            real_dir = self._dirs[directory] = os.path.realpath(os.path.join(self.real, directory))
        real = os.path.join(real_dir, name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if not self._inside(real_dir) or not self._inside(real):
            return (f"resolves (through a symlink) to {real}, outside the data root {self.root} (symlinks are not "
                    "followed: --no-follow-symlinks / data.follow_symlinks: false)")  # fmt: skip
        return None

    def path(self, rel: str) -> Path:
        return Path(self.root) / posixpath.normpath(rel)


FRAMES_FOLDER, MASKS_FOLDER = "frames", "masks"


def mask_rel_path(rel: str) -> str | None:
    """DeepfakeBench's mask rule on a normalised frame path: its ``frames`` folder replaced by ``masks``.

    ``FF/manipulated_sequences/Deepfakes/c23/frames/000_003/0.png`` -> ``.../c23/masks/000_003/0.png``. None when
    no folder of the path is named ``frames`` (the frame has no mask). DeepfakeBench replaces the substring
    ``frames`` anywhere in the path (also inside other names); we replace the last folder named exactly ``frames``.
    """
    parts = rel.split("/")
    for i in range(len(parts) - 2, -1, -1):  # folders only, never the file name
        if parts[i] == FRAMES_FOLDER:
            return "/".join([*parts[:i], MASKS_FOLDER, *parts[i + 1 :]])
    return None


def resolve_mask(rel: str, label: int, root: FrameRoot, where: str) -> Path | None:
    """The mask path of a selected frame (``rel`` normalised) for :class:`FrameRecord`; checked like the frame.

    Real frames (label 0) get None: their mask is all zero, as in DeepfakeBench. A mask path that leaves the data
    root (a ``masks`` symlink pointing out) is a :class:`DatasetError` naming it, as for frames.
    """
    if label == 0:
        return None
    mask = mask_rel_path(rel)
    if mask is None:
        return None
    problem = root.problem(mask)
    if problem:
        raise DatasetError(f"{where}: mask path {mask!r} {problem}; {ALLOW_OUTSIDE_HINT}")
    return root.path(mask)


def lookup_label(label: Any, labels: Mapping[str, int]) -> int | None:
    """The 0/1 value of a video's label string in a canonical label dict (None when unknown or not a string)."""
    if not isinstance(label, str):
        return None
    return labels.get(canonical_label(label))


def canonical_labels(label_dict: Mapping[str, int] | None) -> dict[str, int]:
    """The label dict (DeepfakeBench's default when None) keyed by canonical label strings."""
    try:
        return canonical_label_dict(DEFAULT_LABEL_DICT if label_dict is None else label_dict, "label dict")
    except ValueError as e:
        raise DatasetError(str(e)) from e


def frame_number(path: str) -> int | None:
    """The integer a frame file is named by (``"a/b/0017.png"`` -> 17), or None for any other name."""
    stem = PurePosixPath(normalize_frame_path(path)).stem
    return int(stem) if _INT_NAME.match(stem) else None


def select_frames(frames: list[str], frame_num: int | None) -> list[str]:
    """``frame_num`` evenly spaced frames (all when None or not fewer than the video has).

    Frame ``i`` of ``k`` is taken at the centre of the ``i``-th of ``k`` equal segments: index
    ``floor((i + 0.5) * n / k)``; these are distinct whenever ``k <= n``.
    """
    n = len(frames)
    if frame_num is None or frame_num >= n:
        return list(frames)
    if frame_num <= 0:
        raise ValueError(f"frame_num must be positive, got {frame_num}")
    return [frames[(2 * i + 1) * n // (2 * frame_num)] for i in range(frame_num)]


def video_id(frame_path: str, mode: VideoIdMode = "full") -> str:
    """The id of the video a (normalised) frame path belongs to: its directory, or only its last folder name."""
    parent = PurePosixPath(normalize_frame_path(frame_path)).parent
    return parent.name if mode == "parent" else str(parent)


def video_records(
    ordered: list[str],
    label: int,
    video: Callable[[str], str],
    dataset: str,
    frame_num: int | None,
    root: FrameRoot,
    where: str,
) -> list[FrameRecord]:
    """One video's selected frames as records, whatever the format: evenly spaced picks of its ``ordered``
    (normalised) paths, each checked under ``root`` (symlinks resolved in strict mode) before anything is opened,
    with its forgery mask; ``video(rel)`` is the video id a record carries, ``where`` leads the errors."""
    records = []
    for rel in select_frames(ordered, frame_num):
        problem = root.problem(rel)
        if problem:
            raise DatasetError(f"{where}: frame path {rel!r} {problem}; {ALLOW_OUTSIDE_HINT}")
        records.append(FrameRecord(root.path(rel), label, video(rel), dataset, resolve_mask(rel, label, root, where)))
    return records


def load_frames(
    dataset: str,
    split: str,
    *,
    json_root: str | os.PathLike,
    data_root: str | os.PathLike,
    frame_num: int | None = None,
    label_dict: Mapping[str, int] | None = None,
    compression: str = "c23",
    video_id_mode: VideoIdMode = "full",
    allow_outside_root: bool = False,
    follow_symlinks: bool = True,
) -> list[FrameRecord]:
    """The frames of one dataset split as :class:`FrameRecord` s, videos in JSON order, frames numerically.

    Raises :class:`DatasetError` for an unknown dataset or split, an empty split, an unknown label string, a
    frame whose file name is not an integer, or a frame path outside ``data_root`` (every listed path is checked
    for absolute paths and ``..`` escapes, every selected one also for symlinks pointing out; see
    :class:`FrameRoot`). Frame files are not opened (``mergekit-clip data validate`` does).
    """
    if split not in SPLITS:
        raise DatasetError(f"{dataset}: unknown split {split!r} (choose from {list(SPLITS)})")
    if compression not in COMPRESSION_LEVELS:
        raise DatasetError(f"unknown compression {compression!r} (choose from {list(COMPRESSION_LEVELS)})")
    labels = canonical_labels(label_dict)
    root = FrameRoot(data_root, allow_outside_root, follow_symlinks)
    source = str(dataset_json_path(dataset, json_root))
    groups = read_dataset_json(dataset, json_root)
    records: list[FrameRecord] = []
    for video in iter_videos(dataset, groups, split, compression, source=source):
        where = f"{source}: video {video.label_group}/{split}/{video.name}"
        label = lookup_label(video.label, labels)
        if label is None:
            raise DatasetError(
                f"{where} has label {video.label!r}, which is not in the label dict (known: {sorted(labels)}; "
                "case and surrounding spaces are ignored)"
            )
        numbered = []
        for raw in video.frames:
            number = frame_number(raw)
            if number is None:
                raise DatasetError(f"{where}: frame {raw!r} is not integer-named (run `mergekit-clip data validate`)")
            rel = normalize_frame_path(raw)
            problem = root.problem(rel, resolve=False)
            if problem:
                raise DatasetError(f"{where}: frame path {raw!r} {problem}; {ALLOW_OUTSIDE_HINT}")
            numbered.append((number, rel))
        ordered = [p for _, p in sorted(numbered)]
        records += video_records(ordered, label, lambda rel: video_id(rel, video_id_mode), dataset, frame_num, root,
                                 where)  # fmt: skip
    if not records:
        raise DatasetError(f"{source}: split {split!r} of {dataset} is empty")
    return records
