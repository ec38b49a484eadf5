"""Forgery masks: where a frame's mask lives, reading it, refusing sources without them, and the two training
targets ForensicsAdapter (Cui et al., CVPR 2025) derives from a mask.

Where: DeepfakeBench keeps a fake frame's mask beside it, at the frame path with its ``frames`` folder replaced by
``masks`` (same file name); real frames have none, which means an all-zero mask. Every registered dataset format
resolves ``FrameRecord.mask`` by that rule (:func:`mask_path_for`), checked under the data root like the frame.

Why refuse: DeepfakeBench's loader (and ForensicsAdapter's, which copies it) reads a missing mask as all zero
without a word, so a fake frame without its mask teaches "no forgery here"; the original's issue tracker has a
user at 0.72 instead of 0.90 Celeb-DF-v2 AUC until the masks were found. :func:`require_masks` makes that an error.

Targets (re-implemented from the paper and the behaviour of its public code, OUC-VAS/ForensicsAdapter):

- :func:`boundary_target`: the blending boundary ``4 m (1 - m)`` of the Gaussian-blurred mask ``m`` in [0, 1]
  (the face X-ray form): 0 inside and outside the forged region, 1 where the blend is half-half. The original
  blurs with a 3 x 3 kernel and sigma 0, which OpenCV turns into the fixed binomial kernel [1, 2, 1] / 4; borders
  are reflected without repeating the edge pixel (OpenCV's default).
- :func:`patch_labels`: per ``patch`` x ``patch`` cell (16 px on the adapter's 256-px frame; 14 px on CLIP's 224),
  1 when more than ``threshold`` (0.1) of its pixels are white, a pixel being white above grey level 40 of 255.
- :func:`boundary_patches`: the cells the boundary head may predict in: labelled 1 and not entirely white.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mergekit_clip.data.deepfakebench import DatasetError, FrameRecord, mask_rel_path, normalize_frame_path

PAPER_KERNEL_SIZE = 3  # ForensicsAdapter's boundary blur: cv2.GaussianBlur(mask, (3, 3), 0)
PAPER_SIGMA = 0.0  # 0 = OpenCV's rule for the kernel size (for 3: the binomial [1, 2, 1] / 4)
PAPER_PATCH = 16  # px, the adapter's patch on its 256-px input
PAPER_PATCH_THRESHOLD = 0.1  # white share above which a patch is "forged"
# a pixel is white above grey level 40 of 255 (the original's cv2.threshold(mask, 40)); compared at 40.5 / 255 so
# an 8-bit 40 read as 40 / 255 stays black whatever the float rounding
PAPER_PIXEL_THRESHOLD = 40.5 / 255


def mask_path_for(frame_path: str | os.PathLike) -> Path | None:
    """The mask of a frame by DeepfakeBench's rule: its ``frames`` folder replaced by ``masks`` (``\\`` or ``/``).

    ``"FF\\\\c23\\\\frames\\\\000\\\\0.png"`` -> ``Path("FF/c23/masks/000/0.png")``; None when no folder of the path
    is named ``frames``. DeepfakeBench replaces the substring anywhere (also in other names); we replace the last
    folder named exactly ``frames``.
    """
    mask = mask_rel_path(normalize_frame_path(os.fspath(frame_path)))
    return None if mask is None else Path(mask)


def read_mask(path: str | os.PathLike | None, height: int, width: int) -> np.ndarray:
    """A mask as float32 ``(height, width)`` in [0, 1]: None gives zeros (a real frame).

    Grey or colour images are read as grey (OpenCV's luminance) and resized bilinearly when their size differs, as
    DeepfakeBench does. A missing or unreadable file raises ``FileNotFoundError`` / ``OSError`` naming it: a fake
    frame's missing mask is refused by :func:`require_masks`, never read as zeros.
    """
    if path is None:
        return np.zeros((height, width), np.float32)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"forgery mask {path} does not exist")
    grey = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise OSError(f"forgery mask {path} cannot be decoded as an image")
    if grey.shape != (height, width):
        grey = cv2.resize(grey, (width, height), interpolation=cv2.INTER_LINEAR)
    return grey.astype(np.float32) / 255.0


def _has_mask(record: FrameRecord) -> bool:
    return record.mask is not None and os.path.isfile(record.mask)


def missing_masks(records: Iterable[FrameRecord]) -> list[FrameRecord]:
    """The fake frames whose mask file does not exist (or that have no mask path at all), in order."""
    return [r for r in records if r.label == 1 and not _has_mask(r)]


def require_masks(records: Iterable[FrameRecord], *, what: str, needed_by: str = "mode forensics_adapter") -> None:
    """Raise :class:`DatasetError` (one line: count, total, first) when any fake frame of ``records`` lacks a mask.

    ``what`` names the source (``"Synth-FF train"``), ``needed_by`` what needs the masks. Costs one ``stat`` per
    fake frame; masks are not opened.
    """
    records = list(records)
    fakes = sum(r.label == 1 for r in records)
    missing = missing_masks(records)
    if not missing:
        return
    first = missing[0]
    shown = first.mask if first.mask is not None else f"{first.path}, whose path has no 'frames' folder"
    raise DatasetError(
        f"{what}: {len(missing)} of {fakes} fake frames have no forgery mask (first: {shown}); {needed_by} needs "
        "them (DeepfakeBench keeps a frame's mask at its path with 'frames' replaced by 'masks')"
    )


@dataclass
class MaskCoverage:
    """Frames of one (dataset, label) and how many have a mask file (real frames need none: all zero)."""

    frames: int = 0
    masks: int = 0

    @property
    def missing(self) -> int:
        return self.frames - self.masks


def mask_coverage(records: Iterable[FrameRecord]) -> dict[tuple[str, int], MaskCoverage]:
    """``{(dataset, label): MaskCoverage}`` over ``records`` (label 0 real, 1 fake), in first-seen order."""
    out: dict[tuple[str, int], MaskCoverage] = defaultdict(MaskCoverage)
    for r in records:
        cell = out[(r.dataset, r.label)]
        cell.frames += 1
        cell.masks += _has_mask(r)
    return dict(out)


# ---------------------------------------------------------------- training targets


def _gaussian_kernel(kernel_size: int, sigma: float) -> np.ndarray:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 (0 = OpenCV's rule for the kernel size), got {sigma}")
    # OpenCV's kernel rule (the original blurs with cv2), including its fixed tables for sigma 0 and small kernels
    return cv2.getGaussianKernel(kernel_size, sigma, cv2.CV_64F).ravel()


def gaussian_blur(
    mask: torch.Tensor, *, kernel_size: int = PAPER_KERNEL_SIZE, sigma: float = PAPER_SIGMA
) -> torch.Tensor:
    """``mask`` (``HxW`` or ``BxHxW``) blurred as ``cv2.GaussianBlur(mask, (k, k), sigma)``: separable, reflect-101."""
    if mask.dim() not in (2, 3):
        raise ValueError(f"mask must be HxW or BxHxW, got shape {tuple(mask.shape)}")
    pad = kernel_size // 2
    k1 = torch.as_tensor(_gaussian_kernel(kernel_size, sigma), dtype=mask.dtype, device=mask.device)
    x = mask.reshape(-1, 1, *mask.shape[-2:])
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # torch's reflect = OpenCV's BORDER_REFLECT_101
    x = F.conv2d(x, k1.view(1, 1, 1, -1))
    x = F.conv2d(x, k1.view(1, 1, -1, 1))
    return x.reshape(mask.shape)


def boundary_target(
    mask: torch.Tensor, *, kernel_size: int = PAPER_KERNEL_SIZE, sigma: float = PAPER_SIGMA
) -> torch.Tensor:
    """ForensicsAdapter's blending-boundary target ``4 b (1 - b)``, ``b`` = the Gaussian-blurred mask in [0, 1].

    Same shape as ``mask`` (``HxW`` or ``BxHxW``); all zero for an all-zero (real) or all-one mask.
    """
    blurred = gaussian_blur(mask, kernel_size=kernel_size, sigma=sigma)
    return 4.0 * blurred * (1.0 - blurred)


def _white_share(mask: torch.Tensor, patch: int, pixel_threshold: float) -> torch.Tensor:
    if patch < 1:
        raise ValueError(f"patch must be positive, got {patch}")
    h, w = mask.shape[-2] // patch * patch, mask.shape[-1] // patch * patch  # the original drops a remainder
    if h == 0 or w == 0:
        raise ValueError(f"mask of shape {tuple(mask.shape)} is smaller than one {patch}-px patch")
    white = (mask[..., :h, :w] > pixel_threshold).float()
    x = white.reshape(-1, 1, h, w)
    return F.avg_pool2d(x, patch).reshape(*mask.shape[:-2], h // patch, w // patch)


def patch_labels(
    mask: torch.Tensor,
    *,
    patch: int = PAPER_PATCH,
    threshold: float = PAPER_PATCH_THRESHOLD,
    pixel_threshold: float = PAPER_PIXEL_THRESHOLD,
) -> torch.Tensor:
    """1 per ``patch`` x ``patch`` cell whose share of white pixels (above ``pixel_threshold``) exceeds ``threshold``.

    ``mask`` ``(..., H, W)`` in [0, 1] -> int64 ``(..., H // patch, W // patch)``, row-major like the patch tokens.
    """
    return (_white_share(mask, patch, pixel_threshold) > threshold).long()


def boundary_patches(
    mask: torch.Tensor,
    *,
    patch: int = PAPER_PATCH,
    threshold: float = PAPER_PATCH_THRESHOLD,
    pixel_threshold: float = PAPER_PIXEL_THRESHOLD,
) -> torch.Tensor:
    """1 per cell labelled forged by :func:`patch_labels` that is not entirely white (where a boundary can be)."""
    share = _white_share(mask, patch, pixel_threshold)
    return ((share > threshold) & (share < 1.0)).long()


__all__ = [
    "MaskCoverage",
    "boundary_patches",
    "boundary_target",
    "gaussian_blur",
    "mask_coverage",
    "mask_path_for",
    "missing_masks",
    "patch_labels",
    "read_mask",
    "require_masks",
]
