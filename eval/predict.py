"""Score frames with a detector: fast decode, batched device-side normalisation, per-frame P(fake).

Resizing (``resize``): ``exact`` (default) is the training side's eval transform
(``mergekit_clip.data.transforms.ClipTransform.resize``: float, antialiased ``F.interpolate``), so scores equal
what training validation computes; ``fast`` resizes uint8 frames with OpenCV (``INTER_AREA`` down, cubic/linear
up) and hands uint8 over (4x less to copy and cache); its P(fake) differ by ~1e-3 (measured on the synthetic
benchmark), enough to move an AUC in the third decimal, hence not the default.

Why it is faster than a plain loop (see ``benchmarks/eval_throughput.py``):
- frames are decoded with OpenCV in DataLoader workers, overlapping the forward pass; normalisation is batched
  on the device;
- decoded, resized frames are cached in memory (``cache_mb``), so a second model or a greedy-soup candidate
  on the same frames skips decoding altogether;
- ``torch.inference_mode``; ``bf16``: autocast on CUDA, bf16 *weights* on CPU. On CPU autocast re-casts every
  weight on every call and ran 2x slower than fp32 on ViT-B/16 (AVX512-BF16 EPYC), bf16 weights 4x faster.

Perturbations (``perturbation=`` of :meth:`Predictor.predict`, ``mergekit_clip.data.perturbations``) are applied
in the data workers to the decoded uint8 RGB frame, before the model's resize; sequence perturbations (H.264)
encode each video's frames of this run in order. The frame cache key holds the perturbation and its seed.

Records are anything with ``path``, ``label``, ``video_id`` and ``dataset`` attributes
(``mergekit_clip.data.deepfakebench.FrameRecord``); an optional ``label_group`` is kept for per-group AUC.
A frame that cannot be decoded gets ``ok=False`` and a
``nan`` score; with ``strict=True`` it raises :class:`FrameDecodeError` naming the file.

Failure accounting (:func:`check_failures`): a dataset with no scorable frame, or with more than
``max_failed_share`` of its frames failed (default 5 %, ``clip-eval --max-failed-share``), is an error, not a
report of nulls; failed frames are told apart as *missing* (no such file: usually a wrong ``--data-root``) or
*undecodable* (the file exists but is not an image cv2 reads).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mergekit_clip.data.perturbations import Perturbation
from mergekit_clip.data.transforms import FrameDecodeError, read_image
from mergekit_clip.detector.spec import PreprocessSpec
from mergekit_clip.distributed import DistInfo
from mergekit_clip.options import resolve_workers

cv2.setNumThreads(1)  # decode parallelism comes from DataLoader workers; OpenCV's own pool fights torch's


class Record(Protocol):
    path: Path
    label: int
    video_id: str
    dataset: str


@dataclass
class Predictions:
    """Per-frame predictions of one model on one dataset split (``scores`` is ``nan`` where ``ok`` is False)."""

    model: str
    dataset: str
    paths: list[str]
    labels: np.ndarray
    video_ids: list[str]
    scores: np.ndarray
    ok: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # label group per frame (e.g. FF-DF); empty when unknown

    @property
    def perturbation(self) -> str | None:
        """The perturbation key (``"gaussian_blur:9"``) these frames were scored under; None for clean frames."""
        return self.meta.get("perturbation")

    @property
    def failed(self) -> int:
        return int((~self.ok).sum())


DEFAULT_MAX_FAILED_SHARE = 0.05  # share of a dataset's frames that may fail before a run is refused
FAILURE_EXAMPLES = 3  # paths named per kind of failure


class TooManyFailedFramesError(ValueError):
    """A dataset whose frames mostly (or all) failed: its metrics would describe the wrong frames, or none."""


@dataclass(frozen=True)
class FrameFailures:
    """Failed frames of one dataset split, split into missing files and undecodable ones."""

    dataset: str
    total: int
    missing: tuple[str, ...]
    undecodable: tuple[str, ...]

    @property
    def failed(self) -> int:
        return len(self.missing) + len(self.undecodable)

    @property
    def share(self) -> float:
        return self.failed / self.total if self.total else 1.0

    def describe(self) -> str:
        """``"3 missing (e.g. a.png, b.png), 1 undecodable (e.g. c.png)"``."""
        parts = []
        for kind, paths in (("missing", self.missing), ("undecodable", self.undecodable)):
            if paths:
                shown = ", ".join(paths[:FAILURE_EXAMPLES]) + (", ..." if len(paths) > FAILURE_EXAMPLES else "")
                parts.append(f"{len(paths)} {kind} (e.g. {shown})")
        return "; ".join(parts) or "none failed"


def frame_failures(dataset: str, paths: Sequence[str], ok: np.ndarray) -> FrameFailures:
    """Which of the failed (``~ok``) frames are missing files and which exist but do not decode (one stat each)."""
    failed = [p for p, good in zip(paths, ok) if not good]
    missing = tuple(p for p in failed if not os.path.isfile(p))
    gone = set(missing)
    return FrameFailures(dataset, len(paths), missing, tuple(p for p in failed if p not in gone))


def missing_frames(dataset: str, paths: Sequence[str]) -> FrameFailures:
    """The frames of ``paths`` that do not exist, before anything is decoded (one stat per frame)."""
    return frame_failures(dataset, paths, np.array([os.path.isfile(p) for p in paths], dtype=bool))


def check_failures(failures: FrameFailures, max_failed_share: float = DEFAULT_MAX_FAILED_SHARE) -> FrameFailures:
    """Raise :class:`TooManyFailedFramesError` when no frame, or more than ``max_failed_share``, could be scored."""
    if failures.total and failures.failed < failures.total and failures.share <= max_failed_share:
        return failures
    hint = " (check --data-root)" if failures.missing else ""
    raise TooManyFailedFramesError(
        f"{failures.dataset}: {failures.failed} of {failures.total} frames cannot be scored "
        f"({failures.share:.1%} > --max-failed-share {max_failed_share:.1%}): {failures.describe()}{hint}"
        if failures.failed < failures.total
        else f"{failures.dataset}: none of its {failures.total} frames can be scored: {failures.describe()}{hint}"
    )


def decode_frame(path: str | os.PathLike, preprocess: PreprocessSpec) -> np.ndarray:
    """Read an image file as RGB uint8 HWC at the model's input size (resize per ``preprocess``, centre crop)."""
    return resize_frame(read_image(path), preprocess)


def resize_frame(rgb: np.ndarray, preprocess: PreprocessSpec) -> np.ndarray:
    """``shortest``: scale the short side to ``image_size`` then centre-crop; ``squash``: scale both sides."""
    size = preprocess.image_size
    h, w = rgb.shape[:2]
    if preprocess.resize_mode == "squash":
        new_w, new_h = size, size
    else:
        scale = size / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        # Downscaling: INTER_AREA averages pixels (anti-aliasing, like PIL's bicubic with its wide support).
        down = new_w * new_h < w * h
        upscale = cv2.INTER_CUBIC if preprocess.interpolation == "bicubic" else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if down else upscale)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


ResizeMode = Literal["exact", "fast"]


def load_frame(
    path: str | os.PathLike, preprocess: PreprocessSpec, resize: ResizeMode, rgb: np.ndarray | None = None
) -> torch.Tensor:
    """(3, S, S): uint8 for ``fast``; float in [0, 1] for ``exact`` (the training eval transform's resize).

    ``rgb``: the already decoded (and perturbed) frame; ``path`` is read when it is None.
    """
    if rgb is None:
        rgb = read_image(path)
    if resize == "fast":
        return torch.from_numpy(resize_frame(rgb, preprocess)).permute(2, 0, 1)
    from mergekit_clip.data.transforms import ClipTransform

    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    return ClipTransform(preprocess).resize(tensor).contiguous()


class _FrameDataset(Dataset):
    def __init__(
        self,
        paths: Sequence[str],
        indices: Sequence[int],
        preprocess: PreprocessSpec,
        strict: bool,
        resize: ResizeMode,
        perturbation: Perturbation | None = None,
        seed: int = 0,
        video_ids: Sequence[str] | None = None,
    ):
        self.paths, self.indices, self.preprocess, self.strict = paths, list(indices), preprocess, strict
        self.resize = resize
        self.perturbation, self.seed = perturbation, seed
        self.video_ids = list(video_ids) if video_ids is not None else [str(Path(p).parent) for p in paths]
        self._members: dict[str, list[int]] | None = None
        self._video_frames: dict[str, dict[int, np.ndarray]] = {}  # per worker: the last encoded videos

    def _decoded(self, index: int) -> np.ndarray:
        """The decoded RGB frame ``index``, perturbed (raises :class:`FrameDecodeError`)."""
        p = self.perturbation
        if p is None:
            return read_image(self.paths[index])
        if p.kind == "frame":
            return p.apply_frame(read_image(self.paths[index]), self.seed, self.paths[index])
        video = self.video_ids[index]
        if video not in self._video_frames:
            if self._members is None:
                self._members = {}
                for j, v in enumerate(self.video_ids):
                    self._members.setdefault(v, []).append(j)
            frames: dict[int, np.ndarray] = {}
            for j in self._members[video]:  # the video's frames of this run, in record order
                try:
                    frames[j] = read_image(self.paths[j])
                except FrameDecodeError:
                    pass  # that frame fails on its own below; the rest of the video is still encoded
            encoded = p.apply_video(list(frames.values()), self.seed, video)
            if len(self._video_frames) >= 4:  # frames of one video arrive together: a few videos suffice
                self._video_frames.pop(next(iter(self._video_frames)))
            self._video_frames[video] = dict(zip(frames, encoded))
        if index not in self._video_frames[video]:
            raise FrameDecodeError(f"{self.paths[index]}: not a decodable image")
        return self._video_frames[video][index]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        index = self.indices[i]
        try:
            return load_frame(self.paths[index], self.preprocess, self.resize, self._decoded(index)), index, True
        except FrameDecodeError:
            # not ok, whatever the mode: strict mode raises in the main process (score_paths), so the error is one
            # line naming the frame, not a DataLoader worker's traceback
            size = self.preprocess.image_size
            dtype = torch.uint8 if self.resize == "fast" else torch.float32
            return torch.zeros(3, size, size, dtype=dtype), index, False


class FrameCache:
    """Decoded, resized frames kept in memory up to ``budget_mb`` (shared by every model of a run)."""

    def __init__(self, budget_mb: float = 2048):
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self._frames: dict[tuple, torch.Tensor | None] = {}  # None = known undecodable

    @staticmethod
    def _key(path: str, preprocess: PreprocessSpec, resize: ResizeMode, variant: str = "") -> tuple:
        # PreprocessSpec is a frozen pydantic model: hashable, compared by value. ``variant`` names the
        # perturbation and its seed (``"gaussian_blur:9@0"``; "" = clean), so perturbed frames never pose as clean.
        return path, preprocess, resize, variant

    def get(
        self, path: str, preprocess: PreprocessSpec, resize: ResizeMode, variant: str = ""
    ) -> tuple[bool, torch.Tensor | None]:
        key = self._key(path, preprocess, resize, variant)
        return key in self._frames, self._frames.get(key)

    def put(
        self,
        path: str,
        preprocess: PreprocessSpec,
        resize: ResizeMode,
        image: torch.Tensor | None,
        variant: str = "",
    ) -> None:
        size = 0 if image is None else image.numel() * image.element_size()
        if self.used + size > self.budget:
            return
        key = self._key(path, preprocess, resize, variant)
        if key not in self._frames:
            self._frames[key] = None if image is None else image.clone()
            self.used += size


def _label_groups(records: Sequence[Record]) -> list[str]:
    """Each record's label group (``FF-DF``, ...) where the reader gives one; [] when none does."""
    groups = [str(getattr(r, "label_group", "") or "") for r in records]
    return groups if any(groups) else []


class Predictor:
    """Runs one detector over frames; reuse one instance (and its cache) for all models of a run."""

    def __init__(
        self,
        device: str = "cpu",
        bf16: bool = False,
        batch_size: int = 64,
        num_workers: int | None = None,
        cache: FrameCache | None = None,
        strict: bool = False,
        progress: bool = True,
        dist: DistInfo | None = None,
        resize: ResizeMode = "exact",
        perturb_seed: int = 0,
    ):
        self.perturb_seed = int(perturb_seed)  # seeds every perturbation's randomness (noise, block positions)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch sees no CUDA device")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.bf16, self.batch_size, self.strict, self.progress = bf16, batch_size, strict, progress
        self.num_workers = resolve_workers(num_workers)
        self.cache = cache
        self.dist = dist or DistInfo()
        if resize not in ("exact", "fast"):
            raise ValueError(f"resize must be 'exact' or 'fast', got {resize!r}")
        self.resize = resize

    @property
    def dtype_name(self) -> str:
        if not self.bf16:
            return "fp32"
        return "bf16-autocast" if self.device.type == "cuda" else "bf16-weights"

    def prepare(self, model):
        """Put ``model`` on the device in eval mode (in place); on CPU with ``bf16`` its weights become bf16."""
        model = model.to(self.device).eval()
        if self.bf16 and self.device.type != "cuda":
            model = model.to(torch.bfloat16)
        return model

    @property
    def _autocast(self) -> bool:
        return self.bf16 and self.device.type == "cuda"

    def _variant(self, perturbation: Perturbation | None) -> str:
        return "" if perturbation is None else f"{perturbation.key}@{self.perturb_seed}"

    def _batches(
        self,
        paths: Sequence[str],
        indices: Sequence[int],
        preprocess: PreprocessSpec,
        perturbation: Perturbation | None = None,
        video_ids: Sequence[str] | None = None,
    ) -> Iterator[tuple[torch.Tensor, list[int], list[bool]]]:
        """uint8 (B, 3, H, W) batches with their frame indices; cached frames first, the rest through workers."""
        cached: list[tuple[int, torch.Tensor | None]] = []
        todo: list[int] = []
        variant = self._variant(perturbation)
        for index in indices:
            hit, image = self.cache.get(paths[index], preprocess, self.resize, variant) if self.cache else (False, None)
            if hit:
                cached.append((index, image))
            else:
                todo.append(index)
        size = preprocess.image_size
        blank = torch.zeros(3, size, size, dtype=torch.uint8 if self.resize == "fast" else torch.float32)
        for start in range(0, len(cached), self.batch_size):
            chunk = cached[start : start + self.batch_size]
            images = torch.stack([blank if img is None else img for _, img in chunk])
            yield images, [i for i, _ in chunk], [img is not None for _, img in chunk]
        if not todo:
            return
        workers = min(self.num_workers, math.ceil(len(todo) / self.batch_size))
        loader = DataLoader(
            _FrameDataset(
                paths, todo, preprocess, self.strict, self.resize, perturbation, self.perturb_seed, video_ids
            ),
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )
        for images, batch_indices, oks in loader:
            batch_indices, oks = batch_indices.tolist(), oks.tolist()
            if self.cache is not None:
                for image, index, ok in zip(images, batch_indices, oks):
                    self.cache.put(paths[index], preprocess, self.resize, image if ok else None, variant)
            yield images, batch_indices, oks

    def scorer(self, model) -> tuple[Any, Callable[[torch.Tensor], np.ndarray]]:
        """``model`` prepared, and the function from a batch of frames as the data workers hand them over
        (uint8, or float in [0, 1]; (B, 3, S, S)) to float64 P(fake) (B,); call it under ``inference_mode``."""
        model = self.prepare(model)
        input_dtype = next(model.parameters()).dtype
        preprocess = model.spec.preprocess
        scale = 255.0 if self.resize == "fast" else 1.0  # uint8 frames vs floats in [0, 1]
        mean = torch.tensor(preprocess.mean, device=self.device).view(1, 3, 1, 1) * scale
        std = torch.tensor(preprocess.std, device=self.device).view(1, 3, 1, 1) * scale

        def score(images: torch.Tensor) -> np.ndarray:
            x = images.to(self.device, non_blocking=True).float().sub_(mean).div_(std).to(input_dtype)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
                logits = model(x)
            return model.fake_probability_from_logits(logits.float()).cpu().numpy().astype(np.float64)

        return model, score

    @torch.inference_mode()
    def score_paths(
        self,
        model,
        paths: Sequence[str],
        indices: Sequence[int] | None = None,
        desc: str = "scoring",
        perturbation: Perturbation | None = None,
        video_ids: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(fake) and decode success for ``paths[indices]`` (all paths by default), in that order.

        ``perturbation`` is applied to each decoded frame; a sequence perturbation encodes the frames of each video
        of ``video_ids`` (one per path; default: the frame's folder) together.
        """
        indices = list(range(len(paths))) if indices is None else list(indices)
        model, score = self.scorer(model)
        preprocess = model.spec.preprocess
        position = {index: i for i, index in enumerate(indices)}
        scores = np.full(len(indices), np.nan)
        ok = np.zeros(len(indices), dtype=bool)
        show = self.progress and self.dist.is_main
        # closed on an error too: the bar's line is cleared, so the error is a line of its own
        with tqdm(total=len(indices), desc=desc, unit="frame", disable=not show, leave=False) as bar:
            for images, batch_indices, oks in self._batches(paths, indices, preprocess, perturbation, video_ids):
                if self.strict and not all(oks):
                    bad = [paths[i] for i, o in zip(batch_indices, oks) if not o]
                    what = "is missing (no such file)" if not os.path.isfile(bad[0]) else "is not a decodable image"
                    raise FrameDecodeError(f"{bad[0]}: {what} (strict mode)")
                prob = score(images)
                rows = [position[i] for i in batch_indices]
                scores[rows] = np.where(oks, prob, np.nan)
                ok[rows] = oks
                bar.update(len(batch_indices))
        return scores, ok

    def predict(
        self,
        model,
        records: Sequence[Record],
        model_name: str,
        dataset: str,
        perturbation: Perturbation | None = None,
        **meta: Any,
    ) -> Predictions:
        """Score every record (in order) and keep what a report needs to be rebuilt without the model.

        With ``perturbation`` the frames are perturbed first and ``meta`` records ``perturbation`` (its key) and
        ``perturb_seed``.
        """
        paths = [str(r.path) for r in records]
        video_ids = [str(r.video_id) for r in records]
        indices = self.dist.shard(len(paths))
        if perturbation is not None:
            meta = {**meta, "perturbation": perturbation.key, "perturb_seed": self.perturb_seed}
        desc = f"{model_name} | {dataset}" + (f" | {perturbation.key}" if perturbation is not None else "")
        error = None
        try:
            scores, ok = self.score_paths(model, paths, indices, desc, perturbation, video_ids)
        except FrameDecodeError as e:
            if not self.dist.enabled:
                raise
            # the other ranks wait in the gather: hand them the error instead of leaving them hanging
            error, scores, ok = str(e), np.full(len(indices), np.nan), np.zeros(len(indices), dtype=bool)
        scores, ok, errors = self.dist.gather_scores(len(paths), indices, scores, ok, error)
        if errors:
            raise FrameDecodeError(errors[0])
        return Predictions(
            model=model_name,
            dataset=dataset,
            paths=paths,
            labels=np.asarray([int(r.label) for r in records], dtype=np.int64),
            video_ids=[str(r.video_id) for r in records],
            scores=scores,
            ok=ok,
            meta=dict(meta),
            groups=_label_groups(records),
        )
