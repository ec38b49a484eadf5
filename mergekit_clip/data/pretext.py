"""A generic pre-training corpus for tiny detectors: "was part of this image processed after capture?".

Real CLIP fine-tunes share one basin because they all start from a backbone pre-trained on a generic task. The
tiny demo backbone gets the same kind of start from this corpus instead of from the detection data: abstract
scenes (gradients, shapes, gratings, smooth textures; no faces) "captured" with camera noise, of which half are
then processed, on the whole frame or on a random region (rectangle, polygon or blob, soft or hard edge), by a
common detail-removing edit (median filter, Gaussian blur, fractional resampling, motion blur), and finally
JPEG-stored. Telling processed from untouched images needs the low-level statistics (noise level, local
smoothness) a forgery detector reads, without ever showing a face swap or any of the forgery operators of
:mod:`mergekit_clip.data.synthetic`. Detail-adding edits (noise, sharpening, posterisation, tone curves) exist
as ``EXTRA_OPERATIONS`` but stay out of the default corpus: mixed in, a tiny ViT did not learn the task within
the demo's budget (docs/data.md).

The task is binary so ``clip-train`` trains on it unchanged. DeepfakeBench's default label dictionary has no
generic label strings and ``clip-train`` reads that dictionary, so the corpus borrows DeeperForensics' pair:
``DF_real`` = untouched (0), ``DF_fake`` = processed (1). Output is deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mergekit_clip.data.jpeg import jpeg_roundtrip

PRETEXT_DATASET = "Synth-Pretext"
ORIGINAL_LABEL, PROCESSED_LABEL = "DF_real", "DF_fake"
# Every operation removes fine detail (one consistent direction: a tiny ViT escapes its initial plateau on it
# within the demo budget; a mix of detail-adding and detail-removing operations did not, see docs/data.md).
OPERATIONS = ("median", "smooth", "resample", "motion_blur")
EXTRA_OPERATIONS = ("add_noise", "sharpen", "posterize", "tone")  # harder pretexts, not in the default corpus
MARGIN = 6  # px rendered around the frame so per-frame camera shifts never show an edge


def _grating(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period, angle = rng.uniform(3, 12), rng.uniform(0, np.pi)
    phase = 2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period
    return np.sin(phase + rng.uniform(0, 2 * np.pi)).astype(np.float32)


def _smooth_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    tex = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), rng.uniform(0.7, 2.5))
    return tex / max(float(tex.std()), 1e-6)


def _shape_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """One random filled shape (ellipse, rotated rectangle, polygon or ring) as an anti-aliased (S, S) mask."""
    kind = rng.choice(["ellipse", "rectangle", "polygon", "ring"])
    big = np.zeros((size * 4, size * 4), np.uint8)  # drawn at 4x, then area-downsampled: anti-aliased edges
    centre = rng.uniform(0.1, 0.9, 2) * size * 4
    radius = rng.uniform(0.08, 0.35) * size * 4
    if kind in ("ellipse", "ring"):
        axes = (int(radius), int(radius * rng.uniform(0.4, 1.0)))
        cv2.ellipse(big, tuple(int(c) for c in centre), axes, rng.uniform(0, 180), 0, 360, 255, -1)
        if kind == "ring":
            inner = (int(axes[0] * 0.6), int(axes[1] * 0.6))
            cv2.ellipse(big, tuple(int(c) for c in centre), inner, 0, 0, 360, 0, -1)
    else:
        n = 4 if kind == "rectangle" else int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == "polygon" else np.arange(4) * np.pi / 2 + 0.6
        radii = radius * (rng.uniform(0.5, 1.0, n) if kind == "polygon" else np.ones(n))
        rot = rng.uniform(0, np.pi)
        pts = centre + np.stack([radii * np.cos(angles + rot), radii * np.sin(angles + rot)], 1)
        cv2.fillPoly(big, [pts.astype(np.int32)], 255)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def render_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """An abstract scene (S, S, 3) float32 in grey levels: gradient background, 3-8 textured shapes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    u = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5) + 0.5)[..., None]
    img = rng.uniform(20, 235, 3) * (1 - u) + rng.uniform(20, 235, 3) * u
    low = cv2.resize(rng.normal(0, 1, (4, 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = img + low[..., None] * rng.uniform(0, 15)
    for _ in range(int(rng.integers(3, 9))):
        cover = _shape_mask(rng, size)[..., None]
        colour = rng.uniform(10, 245, 3)
        fill = np.broadcast_to(colour, img.shape).astype(np.float32)
        texture = rng.choice(["flat", "grating", "smooth"])
        if texture == "grating":
            fill = fill + _grating(rng, size)[..., None] * rng.uniform(5, 30)
        elif texture == "smooth":
            fill = fill + _smooth_texture(rng, size)[..., None] * rng.uniform(3, 15)
        img = img + cover * (fill - img)
    return img.astype(np.float32)


def _region(rng: np.random.Generator, size: int, whole_ok: bool = True) -> np.ndarray:
    """Where the processing applies, (S, S) in [0, 1]: whole frame, rectangle, polygon or blob, maybe feathered."""
    kind = rng.choice(["whole", "rectangle", "polygon", "blob"], p=[0.7, 0.1, 0.1, 0.1])
    if kind == "whole" and whole_ok:
        return np.ones((size, size), np.float32)
    if kind == "blob":
        low = cv2.resize(rng.normal(0, 1, (5, 5)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        mask = (low > np.quantile(low, rng.uniform(0.3, 0.7))).astype(np.float32)
    elif kind == "rectangle":
        mask = np.zeros((size, size), np.float32)
        w, h = (rng.uniform(0.4, 0.8, 2) * size).astype(int)
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        mask[y0 : y0 + h, x0 : x0 + w] = 1.0
    elif kind == "polygon":
        pts = rng.uniform(0.05, 0.95, (int(rng.integers(4, 8)), 2)) * size
        hull = cv2.convexHull(pts.astype(np.int32))
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [hull], 1)
        mask = mask.astype(np.float32)
        if mask.mean() < 0.2:  # a sliver: draw another region so the processing stays visible
            return _region(np.random.default_rng(rng.integers(2**31)), size, whole_ok)
    else:  # "whole" for a tone curve (unused by default): keep an untouched border to compare against
        mask = np.zeros((size, size), np.float32)
        mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    sigma = rng.choice([0.0, rng.uniform(0.5, 3.0)])
    return cv2.GaussianBlur(mask, (0, 0), sigma) if sigma else mask


def _process(img: np.ndarray, op: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` (S, S, 3) float32 after one editing operation (applied to the whole frame; masked by the caller)."""
    size = img.shape[0]
    u8 = np.clip(img, 0, 255).round().astype(np.uint8)
    if op == "median":
        return cv2.medianBlur(u8, 5).astype(np.float32)
    if op == "smooth":
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(1.2, 2.0))
    if op == "resample":  # fractional factors, so no integer up-sampling grid
        small = int(round(size / rng.uniform(2.5, 4.0)))
        down = cv2.resize(img, (small, small), interpolation=cv2.INTER_AREA)
        return cv2.resize(down, (size, size), interpolation=cv2.INTER_CUBIC)
    if op == "add_noise":
        return img + rng.normal(0, rng.uniform(12, 20), img.shape).astype(np.float32)
    if op == "sharpen":
        soft = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 1.5))
        return img + rng.uniform(2.0, 3.5) * (img - soft)
    if op == "posterize":
        step = 256 / rng.integers(4, 9)
        return (np.floor(img / step) + 0.5) * step
    if op == "tone":
        gamma = rng.choice([rng.uniform(0.45, 0.7), rng.uniform(1.4, 2.0)])
        gains = rng.uniform(0.75, 1.25, 3)
        return 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma * gains
    if op == "motion_blur":
        n = int(rng.choice([7, 9, 11]))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2, :] = 1.0 / n
        rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (n, n))
        return cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))
    raise ValueError(f"unknown operation {op!r} (choose from {OPERATIONS + EXTRA_OPERATIONS})")


def render_pretext_frame(
    scene: np.ndarray, rng: np.random.Generator, noise: float, quality: tuple[int, int], processed: bool, size: int
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Crop a shifted view of ``scene``, add camera noise, maybe process a region, JPEG-store.

    Returns (image, operations, processed-region mask (S, S) in [0, 1] or None when untouched).
    """
    dx, dy = rng.integers(0, 2 * MARGIN + 1, 2)
    img = scene[dy : dy + size, dx : dx + size] + rng.normal(0, noise, (size, size, 3)).astype(np.float32)
    ops: list[str] = []
    mask = None
    if processed:
        ops = [str(rng.choice(OPERATIONS))]
        edited = img
        for op in ops:
            edited = _process(edited, op, rng)
        mask = _region(rng, size, whole_ok="tone" not in ops)[..., None]
        img = img + mask * (edited - img)
        mask = mask[..., 0]
    return jpeg_roundtrip(img, int(rng.integers(quality[0], quality[1] + 1))), ops, mask


def generate_pretext(
    videos: int,
    frames: int,
    seed: int,
    data_root: Path,
    *,
    image_size: int,
    frame_names: list[str],
    splits: list[str],
    write_png: Callable[[Path, np.ndarray], None],
    write_mask: Callable[[Path, np.ndarray], None],
    progress: Callable[[int], Any],
) -> dict[str, Any]:
    """Render ``videos`` untouched + ``videos`` processed clips of ``frames`` frames; returns the dataset JSON.

    A clip is one scene seen through small camera shifts with its own noise level and JPEG quality; a processed
    clip draws fresh operations and regions per frame, and writes each processed frame's region mask at its
    DeepfakeBench mask path (``frames`` -> ``masks``). ``splits[i]`` is the split of scene ``i``, shared by its
    untouched and processed clips so no scene crosses splits.
    """
    groups: dict[str, Any] = {}
    for scene_id in range(videos):
        for processed in (False, True):
            rng = np.random.default_rng([seed, 7, scene_id, int(processed)])
            scene = render_scene(np.random.default_rng([seed, 7, scene_id]), image_size + 2 * MARGIN)
            noise, quality = rng.uniform(4.0, 8.0), (int(rng.integers(88, 95)), 98)
            group = "processed" if processed else "original"
            rel_dir = f"{PRETEXT_DATASET}/{group}/frames/{scene_id:05d}"
            for name in frame_names[:frames]:
                img, _, mask = render_pretext_frame(scene, rng, noise, quality, processed, image_size)
                write_png(data_root / rel_dir / f"{name}.png", img)
                if mask is not None:
                    write_mask(data_root / rel_dir.replace("/frames/", "/masks/") / f"{name}.png", mask)
            node = groups.setdefault(group, {}).setdefault(splits[scene_id], {})
            node[f"{scene_id:05d}"] = {
                "label": PROCESSED_LABEL if processed else ORIGINAL_LABEL,
                "frames": [f"{rel_dir}/{n}.png" for n in sorted(frame_names[:frames])],
            }
            progress(frames)
    return {PRETEXT_DATASET: groups}


__all__ = ["OPERATIONS", "PRETEXT_DATASET", "generate_pretext", "render_scene"]
