"""Training data: DeepfakeBench records, optional in-memory decoded frames, reproducible augmentation.

Augmentation randomness is derived from (seed, epoch, frame index) only, never from a global RNG, so an epoch
produces the same images whatever the number of processes, the worker count, or whether the run was resumed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mergekit_clip.data.deepfakebench import DatasetError, FrameRecord
from mergekit_clip.data.formats import load_frames
from mergekit_clip.data.masks import read_mask
from mergekit_clip.data.transforms import FrameDecodeError, FrameMissingError, check_image, read_image

if TYPE_CHECKING:  # only the annotation: train.config imports the mode registry, whose modes import this module
    from train.config import DataConfig

_DECODED: dict[str, np.ndarray] = {}  # path -> RGB uint8 frame; shared by every ingredient of a sweep


def load_records(data: DataConfig, datasets: Sequence[str], split: str) -> list[FrameRecord]:
    """Frames of one split over one or more datasets (``DatasetError`` names an unknown dataset/split)."""
    records: list[FrameRecord] = []
    for name in datasets:
        records.extend(
            load_frames(
                name,
                split,
                json_root=data.json_root,
                data_root=data.data_root,
                frame_num=data.frame_num,
                compression=data.compression,
                allow_outside_root=data.allow_outside_root,
                follow_symlinks=data.follow_symlinks,
            )
        )
    return records


def check_frames(records: Sequence[FrameRecord], mode: str, *, what: str = "", progress: bool = True) -> list[str]:
    """Check every distinct frame file per ``mode`` (``data.check_images``) before training starts.

    Returns one line per bad frame (missing or undecodable, saying which), in record order; nothing is cached.
    """
    if mode == "none":
        return []
    problems: list[str] = []
    seen: set[str] = set()
    todo = [r for r in records if not (str(r.path) in seen or seen.add(str(r.path)))]
    for r in tqdm(todo, desc=f"check frames{what}", unit="img", disable=not progress or len(todo) < 1024, leave=False):
        try:
            check_image(r.path, mode)  # type: ignore[arg-type]
        except FrameMissingError as e:
            problems.append(f"missing: {e}")
        except FrameDecodeError as e:
            problems.append(f"undecodable: {e}")
    return problems


def require_frames(records: Sequence[FrameRecord], mode: str, *, what: str = "", progress: bool = True) -> list[str]:
    """:func:`check_frames`, raising :class:`DatasetError` (first bad file, and the counts) if any frame fails."""
    problems = check_frames(records, mode, what=what, progress=progress)
    if problems:
        missing = sum(p.startswith("missing") for p in problems)
        raise DatasetError(
            f"{problems[0].split(': ', 1)[1]}{what} ({missing} missing, {len(problems) - missing} undecodable of "
            f"{len({str(r.path) for r in records})} frames checked with data.check_images={mode}; fix the data or "
            "set data.on_error=skip)"
        )
    return problems


def records_fingerprint(records: Sequence[FrameRecord]) -> str:
    """Hash of the frame list (path, label, size, mtime): a changed or re-extracted frame changes it."""
    digest = hashlib.sha256()
    for r in records:
        try:
            st = Path(r.path).stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{r.path}|{r.label}|{stamp}\n".encode())
    return digest.hexdigest()


def decode_all(records: Sequence[FrameRecord], on_error: str = "raise") -> list[np.ndarray | None]:
    """Decode every frame once (memoised per process); ``None`` for an undecodable frame when skipping."""
    out: list[np.ndarray | None] = []
    todo = [r for r in records if str(r.path) not in _DECODED]
    for r in tqdm(todo, desc="decode frames", unit="img", disable=len(todo) < 256, leave=False):
        try:
            _DECODED[str(r.path)] = read_image(r.path)
        except FrameDecodeError:
            if on_error == "raise":
                raise
    for r in records:
        out.append(_DECODED.get(str(r.path)))
    return out


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**31 - 1)


def seed_transform(transform: Callable, seed: int) -> None:
    """Make the next call of ``transform`` deterministic (albumentations keeps its own generator)."""
    if hasattr(transform, "reseed"):  # mergekit_clip.data.transforms.ClipTransform
        transform.reseed(seed)
        return
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainFrames(Dataset):
    """Items ``(image[3,H,W], label, index, ok)``; ``ok`` is False (zero image) for a skipped bad frame.

    ``masks=True`` appends the frame's forgery mask ``(H, W)`` in [0, 1], moved with the frame by the augmentation
    (``ClipTransform.with_mask``; zeros for real frames and skipped ones).
    """

    def __init__(
        self,
        records: Sequence[FrameRecord],
        transform: Callable[[np.ndarray], torch.Tensor],
        image_size: int,
        *,
        seed: int = 0,
        cache_images: bool = True,
        on_error: str = "raise",
        augment: bool = True,
        masks: bool = False,
    ):
        self.records = list(records)
        self.masks = masks
        self.transform = transform
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0
        self.on_error = on_error
        self.augment = augment
        self.images = decode_all(self.records, on_error) if cache_images else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> np.ndarray | None:
        if self.images is not None:
            return self.images[index]
        try:
            return read_image(self.records[index].path)
        except FrameDecodeError:
            if self.on_error == "raise":
                raise
            return None

    def __getitem__(self, index: int):
        record = self.records[index]
        image = self._image(index)
        if image is None:
            blank = torch.zeros(3, self.image_size, self.image_size)
            return (blank, record.label, index, False) + ((blank[0],) if self.masks else ())
        if self.augment:
            seed_transform(self.transform, _item_seed(self.seed, self.epoch, index))
        if self.masks:
            tensor, mask = self.transform.with_mask(image, read_mask(record.mask, *image.shape[:2]))
            return tensor, record.label, index, True, mask
        return self.transform(image), record.label, index, True
