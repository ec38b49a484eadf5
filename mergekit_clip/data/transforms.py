"""Image pipeline: decode, DeepfakeBench-like training augmentation, CLIP resize + normalisation, datasets.

The training augmentation follows the recipe DeepfakeBench describes (horizontal flip, small rotation, Gaussian
blur, brightness/contrast or hue/saturation jitter, JPEG re-compression at quality 40-100), written against
albumentations 2.x argument names: 1.x names such as ``ImageCompression(quality_lower=...)`` are dropped with a
warning only, so ``tests/test_data_transforms.py`` checks that every step here changes pixels as configured.

Augmentation runs at the frame's stored resolution (where real-world compression happens); the CLIP resize is a
torch antialiased resize, close to the PIL resize open_clip uses, so downscaling does not alias.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import DataLoader, Dataset

from mergekit_clip.data.deepfakebench import FrameRecord
from mergekit_clip.data.masks import read_mask
from mergekit_clip.detector.spec import PreprocessSpec

ImageTransform = Callable[[np.ndarray], torch.Tensor]


class FrameDecodeError(OSError):
    """A frame file that is missing or cannot be decoded as an image (the message names the file)."""


class FrameMissingError(FrameDecodeError):
    """A frame file that does not exist (a wrong data root, an incomplete extraction), as opposed to undecodable."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as RGB uint8 (H, W, 3); grey and RGBA files are converted."""
    path = Path(path)
    try:
        # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on Windows.
        buffer = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as e:
        raise FrameMissingError(f"frame {path} is missing (no such file)") from e
    except OSError as e:
        raise FrameDecodeError(f"cannot read frame {path}: {e.strerror or e}") from e
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise FrameDecodeError(f"cannot decode frame {path} ({buffer.size} bytes): not an image cv2 can read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


ImageCheck = Literal["exists", "header", "decode"]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"


def _check_header(path: Path, size: int) -> None:
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(_PNG_SIGNATURE):
            width, height = (int.from_bytes(head[i : i + 4], "big") for i in (16, 20))
            if len(head) < 24 or head[12:16] != b"IHDR" or not (width and height):
                raise FrameDecodeError(f"frame {path}: corrupt PNG header")
            f.seek(max(size - 64, 0))
            if b"IEND" not in f.read(64):  # a PNG cut short (killed extraction) has no end chunk; cv2 refuses it
                raise FrameDecodeError(f"frame {path}: truncated PNG ({size} bytes, no IEND chunk)")
            return
    # JPEG: the start marker is enough, libjpeg (so cv2) decodes a truncated JPEG with a warning.
    if not head.startswith(_JPEG_SOI) and not cv2.haveImageReader(str(path)):
        raise FrameDecodeError(f"frame {path} ({size} bytes): not an image format cv2 can read")


def check_image(path: str | os.PathLike, mode: ImageCheck = "header") -> None:
    """Raise :class:`FrameMissingError` / :class:`FrameDecodeError` unless ``path`` passes ``mode``'s check.

    ``exists``: a regular file; ``header``: a non-empty file whose header is a PNG, JPEG or another format cv2
    reads (PNG files also need their end chunk), reading only the first and last bytes; ``decode``: a full
    :func:`read_image`.
    """
    path = Path(path)
    if mode == "decode":
        read_image(path)
        return
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise FrameMissingError(f"frame {path} is missing (no such file)") from e
    except OSError as e:
        raise FrameDecodeError(f"cannot read frame {path}: {e.strerror or e}") from e
    if not path.is_file():
        raise FrameDecodeError(f"frame {path} is not a regular file")
    if mode == "header":
        if st.st_size == 0:
            raise FrameDecodeError(f"frame {path} is empty (0 bytes)")
        try:
            _check_header(path, st.st_size)
        except OSError as e:
            if isinstance(e, FrameDecodeError):
                raise
            raise FrameDecodeError(f"cannot read frame {path}: {e.strerror or e}") from e


class AugmentSpec(BaseModel):
    """DeepfakeBench-like training augmentation; ``strength`` of :func:`build_train_transform` scales it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flip_p: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    rotate_limit: float = Field(10.0, ge=0, description="max rotation in degrees")
    rotate_p: float = Field(0.5, ge=0, le=1)
    blur_limit: tuple[int, int] = Field((3, 7), description="Gaussian kernel size range (odd pixels)")
    blur_p: float = Field(0.5, ge=0, le=1)
    brightness_limit: float = Field(0.1, ge=0, description="fraction of the max value")
    contrast_limit: float = Field(0.1, ge=0)
    hue_shift_limit: float = Field(10.0, ge=0, description="OpenCV hue units")
    sat_shift_limit: float = Field(15.0, ge=0)
    val_shift_limit: float = Field(10.0, ge=0)
    color_p: float = Field(0.5, ge=0, le=1, description="probability of brightness/contrast OR hue jitter")
    jpeg_quality: tuple[int, int] = Field((40, 100), description="JPEG quality range, 1-100")
    jpeg_p: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> AugmentSpec:
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {self.jpeg_quality}")
        b_lo, b_hi = self.blur_limit
        if not (3 <= b_lo <= b_hi and b_lo % 2 and b_hi % 2):
            raise ValueError(f"blur_limit must be odd sizes >= 3 with low <= high, got {self.blur_limit}")
        return self

    def scaled(self, strength: float) -> AugmentSpec:
        """Probabilities and ranges multiplied by ``strength`` (clipped); 0 turns augmentation off."""
        if strength < 0:
            raise ValueError(f"augmentation strength must be >= 0, got {strength}")
        s = float(strength)

        def p(x: float) -> float:
            return min(1.0, x * s)

        lo, hi = self.jpeg_quality
        return self.model_copy(
            update={
                "flip_p": p(self.flip_p),
                "rotate_limit": self.rotate_limit * s,
                "rotate_p": p(self.rotate_p),
                "blur_p": p(self.blur_p),
                "brightness_limit": self.brightness_limit * s,
                "contrast_limit": self.contrast_limit * s,
                "hue_shift_limit": self.hue_shift_limit * s,
                "sat_shift_limit": self.sat_shift_limit * s,
                "val_shift_limit": self.val_shift_limit * s,
                "color_p": p(self.color_p),
                # stronger -> lower minimum quality, never below 1
                "jpeg_quality": (max(1, round(hi - (hi - lo) * s)), hi),
                "jpeg_p": p(self.jpeg_p),
            }
        )


def build_augmentation(spec: AugmentSpec, seed: int | None = None) -> A.Compose:
    """The albumentations 2.x pipeline for ``spec`` (argument names checked against albumentations 2.0.8)."""
    steps = [
        A.HorizontalFlip(p=spec.flip_p),
        A.Rotate(limit=(-spec.rotate_limit, spec.rotate_limit), border_mode=cv2.BORDER_CONSTANT, fill=0,
                 p=spec.rotate_p),
        A.GaussianBlur(blur_limit=spec.blur_limit, p=spec.blur_p),
        A.OneOf(
            [
                A.RandomBrightnessContrast(
                    brightness_limit=(-spec.brightness_limit, spec.brightness_limit),
                    contrast_limit=(-spec.contrast_limit, spec.contrast_limit),
                    p=1.0,
                ),
                A.HueSaturationValue(
                    hue_shift_limit=(-spec.hue_shift_limit, spec.hue_shift_limit),
                    sat_shift_limit=(-spec.sat_shift_limit, spec.sat_shift_limit),
                    val_shift_limit=(-spec.val_shift_limit, spec.val_shift_limit),
                    p=1.0,
                ),
            ],
            p=spec.color_p,
        ),
        A.ImageCompression(compression_type="jpeg", quality_range=spec.jpeg_quality, p=spec.jpeg_p),
    ]  # fmt: skip
    return A.Compose(steps, seed=seed)


class ClipTransform:
    """``uint8 (H, W, 3) RGB -> float32 (3, S, S)``: optional augmentation, CLIP resize, CLIP normalisation.

    A plain class (no closures) so DataLoader workers can pickle it; :meth:`reseed` gives each worker its own
    augmentation stream (see :func:`seed_worker`).
    """

    def __init__(self, preprocess: PreprocessSpec, augmentation: A.Compose | None = None):
        self.preprocess = preprocess
        self.augmentation = augmentation
        self.image_size = preprocess.image_size
        self._mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(preprocess.std, dtype=torch.float32).view(3, 1, 1)

    def reseed(self, seed: int) -> None:
        if self.augmentation is not None:
            self.augmentation.set_random_seed(seed)

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """(C, H, W) float in [0, 1] -> (C, S, S): ``shortest`` side to S + centre crop, or ``squash`` to S x S."""
        size = self.image_size
        _, h, w = image.shape
        if self.preprocess.resize_mode == "squash":
            out_h, out_w = size, size
        else:
            scale = size / min(h, w)
            out_h, out_w = max(size, round(h * scale)), max(size, round(w * scale))
        if (out_h, out_w) != (h, w):
            image = F.interpolate(
                image[None], size=(out_h, out_w), mode=self.preprocess.interpolation, antialias=True,
                align_corners=False,
            )[0].clamp_(0.0, 1.0)  # fmt: skip
        top, left = (out_h - size) // 2, (out_w - size) // 2
        return image[:, top : top + size, left : left + size]

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        if self.augmentation is not None:
            image = self.augmentation(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        return (self.resize(tensor) - self._mean) / self._std

    def with_mask(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame as :meth:`__call__` gives it, and its forgery mask ``(H, W)`` in [0, 1] moved with it.

        The mask takes the augmentation's spatial steps with the same draws (flip, rotation: albumentations applies
        those to a ``mask`` target and leaves it out of blur, colour and JPEG) and the same resize and crop; it comes
        back as float32 ``(S, S)`` in [0, 1].
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} differs from the frame's {image.shape[:2]}")
        if self.augmentation is not None:
            out = self.augmentation(image=image, mask=np.ascontiguousarray(mask, dtype=np.float32))
            image, mask = out["image"], out["mask"]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        mask_tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return (self.resize(tensor) - self._mean) / self._std, self.resize(mask_tensor)[0].clamp_(0.0, 1.0)


def build_train_transform(
    preprocess: PreprocessSpec, strength: float = 1.0, augment: AugmentSpec | None = None, seed: int | None = None
) -> ClipTransform:
    """Augment (DeepfakeBench-like, scaled by ``strength``; 0 = none), then CLIP resize and normalise."""
    spec = (augment or AugmentSpec()).scaled(strength)
    return ClipTransform(preprocess, build_augmentation(spec, seed=seed) if strength > 0 else None)


def build_eval_transform(preprocess: PreprocessSpec) -> ClipTransform:
    """CLIP resize and normalisation only."""
    return ClipTransform(preprocess)


class FrameDataset(Dataset):
    """Frames of :class:`FrameRecord` s as ``(image, label, index, ok)``, or ``(image, label, index, ok, mask)``.

    ``on_error="raise"`` fails on the first undecodable frame (naming it); ``"skip"`` returns a zero image with
    ``ok=False`` so a whole evaluation is not lost to one bad file, and callers drop those rows by ``ok``.
    ``masks=True`` adds each frame's forgery mask (``FrameRecord.mask`` read by
    :func:`mergekit_clip.data.masks.read_mask`; zeros for real frames) moved with the frame by
    :meth:`ClipTransform.with_mask`, float32 ``(S, S)``; check them first with ``require_masks``.
    """

    def __init__(
        self,
        records: Sequence[FrameRecord],
        transform: ImageTransform,
        on_error: Literal["raise", "skip"] = "raise",
        masks: bool = False,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if masks and not hasattr(transform, "with_mask"):
            raise TypeError(f"masks=True needs a transform with a with_mask method (ClipTransform), got {transform!r}")
        self.records = list(records)
        self.transform = transform
        self.on_error = on_error
        self.masks = masks
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.records)

    def _blank_image(self) -> torch.Tensor:
        if self._blank is None:
            size = getattr(self.transform, "image_size", None)
            if size is not None:
                self._blank = torch.zeros(3, size, size)
            else:  # an arbitrary callable: learn its output shape from a dummy frame
                self._blank = torch.zeros_like(self.transform(np.zeros((32, 32, 3), np.uint8)))
        return self._blank

    def __getitem__(self, index: int) -> tuple:
        record = self.records[index]
        try:
            image = read_image(record.path)
        except FrameDecodeError:
            if self.on_error == "raise":
                raise
            blank = self._blank_image().clone()
            if self.masks:
                return blank, record.label, index, False, torch.zeros(blank.shape[1:])
            return blank, record.label, index, False
        if self.masks:
            tensor, mask = self.transform.with_mask(image, read_mask(record.mask, *image.shape[:2]))
            return tensor, record.label, index, True, mask
        return self.transform(image), record.label, index, True


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed the augmentation from torch's per-worker, per-epoch seed.

    albumentations keeps its own generator inside ``Compose``; forked workers would otherwise share it and
    produce identical augmentations.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if hasattr(transform, "reseed"):
        transform.reseed(torch.initial_seed() % 2**32)


def make_loader(
    dataset: FrameDataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with per-worker augmentation seeds and a seeded shuffle order."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=False,
    )
