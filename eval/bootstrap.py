"""Bootstrap confidence intervals of frame and video AUC that resample videos, and paired differences.

Frames of one video share identity, scene, camera and forgery, so they are not independent draws: an i.i.d.
frame bootstrap treats 300 frames of 100 videos as 300 draws and gives intervals that are too narrow. Here one
resample draws, independently for every dataset, as many real videos as the dataset has (with replacement) from
its real videos and as many fake videos from its fake videos (stratified by video label), and every frame of a
drawn video enters with the number of times its video was drawn.

- ``level="frame"``: AUC over frames, each weighted by its video's draw count;
- ``level="video"``: AUC over videos of the mean P(fake) of each video's frames, weighted by draw counts.

AUC with weights is the Mann-Whitney statistic ``sum_{i fake, j real} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2)
/ (sum w_fake * sum w_real)``, which at unit weights equals scikit-learn's ``roc_auc_score`` (ties count one
half). It is computed for all resamples at once: real frames are sorted by score once and every fake frame's
rank among them is found once (``searchsorted``); per resample, the real weight below a fake frame is then a
prefix sum read at that rank (arrays of frames x resamples, processed in chunks).

The statistic of a set of datasets is the mean over datasets of their AUC (one dataset: its AUC); intervals are
percentile intervals of that mean over the resamples, and the estimate is its value on the data as observed. A
difference between two models is bootstrapped *paired*: both models' scores of the same frames are evaluated on
the same resamples, so the variation the models share (which videos happen to be drawn) cancels.

>>> import numpy as np
>>> frames = ScoredFrames(labels=np.array([0, 0, 1, 1]), scores=np.array([0.1, 0.4, 0.35, 0.8]),
...                       video_ids=np.array(["r1", "r2", "f1", "f2"]))
>>> bootstrap_auc({"toy": frames}, n_boot=200).estimate
0.75
>>> verdict(paired_auc_difference({"toy": frames}, {"toy": frames}, n_boot=200))
'within noise'
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

Level = Literal["frame", "video"]
Verdict = Literal["helped", "hurt", "within noise"]
_CHUNK_CELLS = 4_000_000  # resamples x frames per chunk: bounds the working memory (~100 MB) at any size


@dataclass(frozen=True)
class ScoredFrames:
    """One model's scores on one dataset split: per frame its label (real 0, fake 1), P(fake) and video id.

    ``video_ids`` are the full video directory ids the reader gives (FF++ fakes of different methods share a
    folder name, not a full id). Arrays are 1-D and of equal length; they are not modified.
    """

    labels: np.ndarray
    scores: np.ndarray
    video_ids: np.ndarray


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval ``[low, high]`` at ``confidence``."""

    estimate: float
    low: float
    high: float
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class _Design:
    """One dataset's ranking, reduced to what a resample needs besides its video draw counts."""

    real_video: np.ndarray  # (F_real,) video index of each real item, in ascending score order
    fake_video: np.ndarray  # (F_fake,) video index of each fake item
    below: np.ndarray  # (F_fake,) real items scored strictly below each fake item
    not_above: np.ndarray  # (F_fake,) real items scored below or equal
    video_labels: np.ndarray  # (V,) label per video; reals first, then fakes
    n_real: int  # videos with label 0 (indices 0 .. n_real - 1)


def _check(name: str, frames: ScoredFrames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, scores, vids = (np.asarray(a) for a in (frames.labels, frames.scores, frames.video_ids))
    if not (labels.ndim == scores.ndim == vids.ndim == 1) or not (len(labels) == len(scores) == len(vids)):
        raise ValueError(
            f"dataset {name!r}: labels, scores and video_ids must be 1-D of one length "
            f"(got shapes {labels.shape}, {scores.shape}, {vids.shape})"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"dataset {name!r}: labels must be 0 (real) or 1 (fake), got {sorted(set(labels.tolist()))}")
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"dataset {name!r}: {int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return labels.astype(np.int64), scores, vids.astype(str)


def _video_table(name: str, labels: np.ndarray, vids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video index per frame, label per video, order) with real videos numbered before fake ones."""
    unique, inverse = np.unique(vids, return_inverse=True)
    per_video = np.zeros(len(unique), np.int64)
    np.maximum.at(per_video, inverse, labels)
    mixed = np.flatnonzero(per_video[inverse] != labels)
    if len(mixed):
        raise ValueError(f"dataset {name!r}: video {str(vids[mixed[0]])!r} has both real and fake frames")
    if per_video.min() == per_video.max():
        kind = "fake" if per_video[0] else "real"
        raise ValueError(f"dataset {name!r}: AUC needs real and fake videos, all {len(unique)} videos are {kind}")
    order = np.argsort(per_video, kind="stable")  # reals first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse], per_video[order], order


def _design(name: str, frames: ScoredFrames, level: Level) -> tuple[_Design, np.ndarray]:
    """The resampling design of one dataset and the scores it ranks (per frame, or per video for "video")."""
    labels, scores, vids = _check(name, frames)
    video_of_frame, video_labels, _ = _video_table(name, labels, vids)
    if level == "video":
        sums = np.bincount(video_of_frame, weights=scores, minlength=len(video_labels))
        scores = sums / np.bincount(video_of_frame, minlength=len(video_labels))
        labels, video_of_frame = video_labels, np.arange(len(video_labels))
    elif level != "frame":
        raise ValueError(f"level must be 'frame' or 'video', got {level!r}")
    fake = labels.astype(bool)
    order = np.argsort(scores[~fake], kind="stable")
    real_scores = scores[~fake][order]
    design = _Design(
        real_video=video_of_frame[~fake][order],
        fake_video=video_of_frame[fake],
        below=np.searchsorted(real_scores, scores[fake], side="left"),
        not_above=np.searchsorted(real_scores, scores[fake], side="right"),
        video_labels=video_labels,
        n_real=int((video_labels == 0).sum()),
    )
    return design, scores


@functools.lru_cache(maxsize=32)
def _draw_counts(seed: int, draw_name: str, n_boot: int, n_real: int, n_video: int) -> np.ndarray:
    """(n_boot, V) draw count of every video: stratified by video label (reals are videos 0 .. n_real - 1), with
    replacement, from the generator of (seed, draw_name). Those five values fix the draws, and a study resamples
    every model of a dataset with the same ones (that is what pairs them), so they are drawn once per process and
    handed out read-only."""
    rng = _seed_of(seed, draw_name)
    flat = [
        rng.integers(lo, hi, size=(n_boot, hi - lo)) + n_video * np.arange(n_boot)[:, None]  # row offsets
        for lo, hi in ((0, n_real), (n_real, n_video))
    ]
    picks = np.concatenate([f.ravel() for f in flat])
    counts = np.bincount(picks, minlength=n_boot * n_video).reshape(n_boot, n_video).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _weighted_auc(design: _Design, video_weights: np.ndarray) -> np.ndarray:
    """AUC per row of ``video_weights`` (R, V): the weighted Mann-Whitney statistic.

    Per resample, the real weight ranked below a fake item is a prefix sum of real weights in score order, read
    at the item's ``searchsorted`` positions (ties: the mean of the strict and the inclusive prefix = one half).
    """
    out = np.empty(len(video_weights))
    n_items = len(design.real_video) + len(design.fake_video)
    step = max(1, _CHUNK_CELLS // max(1, n_items))
    for i in range(0, len(video_weights), step):
        w = np.ascontiguousarray(video_weights[i : i + step].T)  # (V, r): rows contiguous for the gathers
        real_w = w[design.real_video]
        prefix = np.zeros((len(real_w) + 1, w.shape[1]))
        np.cumsum(real_w, axis=0, out=prefix[1:])
        fake_w = w[design.fake_video]
        wins = (fake_w * (prefix[design.below] + prefix[design.not_above])).sum(0) / 2
        out[i : i + step] = wins / (fake_w.sum(0) * prefix[-1])
    return out


def _seed_of(seed: int, name: str) -> np.random.Generator:
    # keyed by the dataset's name, so adding a dataset never changes another dataset's resamples
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _aucs(
    datasets: Mapping[str, ScoredFrames], level: Level, n_boot: int, seed: int,
    resample_as: Mapping[str, str] | None = None,
) -> tuple[float, np.ndarray]:
    """(observed mean AUC over datasets, (n_boot,) resampled mean AUC).

    ``resample_as`` maps a key to the name whose draws it shares: conditions of one dataset (e.g. its perturbed
    copies, the same frames scored again) keyed ``"DS|blur:3"`` with ``resample_as={"DS|blur:3": "DS"}`` all draw
    the same videos, as they must, since they are one sample of videos."""  # fmt: skip
    if not datasets:
        raise ValueError("no datasets given")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    observed, resampled = [], np.zeros(n_boot)
    for name in sorted(datasets):
        design, _ = _design(name, datasets[name], level)
        observed.append(_weighted_auc(design, np.ones((1, len(design.video_labels))))[0])
        draw_name = (resample_as or {}).get(name, name)
        counts = _draw_counts(seed, draw_name, n_boot, design.n_real, len(design.video_labels))
        resampled += _weighted_auc(design, counts)
    return float(np.mean(observed)), resampled / len(datasets)


def _interval(estimate: float, samples: np.ndarray, confidence: float) -> Interval:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return Interval(estimate=estimate, low=float(low), high=float(high), confidence=confidence)


def bootstrap_auc(
    datasets: Mapping[str, ScoredFrames],
    *,
    level: Level = "frame",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """The mean over ``datasets`` of their frame or video AUC, with a video-level stratified bootstrap interval.

    Each resample draws videos with replacement, stratified by video label, independently per dataset (see the
    module docstring). Raises ``ValueError`` naming the dataset for a video with both labels, a dataset with one
    class, NaN scores, or arrays of different lengths.
    """
    estimate, samples = _aucs(datasets, level, n_boot, seed)
    return _interval(estimate, samples, confidence)


def resampled_auc(
    datasets: Mapping[str, ScoredFrames], *, level: Level = "frame", n_boot: int = 1000, seed: int = 0
) -> tuple[float, np.ndarray]:
    """(observed mean AUC over ``datasets``, its ``(n_boot,)`` values on the resamples): the draws every other
    function here makes for the same seed and datasets, so statistics across models (a rank correlation, the
    regret of a pick) can be bootstrapped on the same resamples."""
    return _aucs(datasets, level, n_boot, seed)


def percentile_interval(estimate: float, samples: np.ndarray, confidence: float = 0.95) -> Interval:
    """The percentile interval of ``samples`` around ``estimate`` (what :func:`bootstrap_auc` returns)."""
    return _interval(estimate, samples, confidence)


def paired_auc_difference(
    a: Mapping[str, ScoredFrames],
    b: Mapping[str, ScoredFrames],
    *,
    level: Level = "frame",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample_as: Mapping[str, str] | None = None,
) -> Interval:
    """Mean AUC of ``a`` minus that of ``b``, both on the same resamples (a paired bootstrap); ``resample_as``
    lets keys share one dataset's draws (see :func:`_aucs`).

    ``a`` and ``b`` must score the same frames: the same datasets, and per dataset the same labels and video ids
    in the same order; otherwise ``ValueError`` names the dataset. A model compared with itself gives exactly 0.
    """
    if set(a) != set(b):
        raise ValueError(f"a and b name different datasets: only in a {sorted(set(a) - set(b))}, "
                         f"only in b {sorted(set(b) - set(a))}")  # fmt: skip
    for name in sorted(a):
        fa, fb = a[name], b[name]
        same = (
            len(fa.labels) == len(fb.labels)
            and np.array_equal(np.asarray(fa.labels), np.asarray(fb.labels))
            and np.array_equal(np.asarray(fa.video_ids).astype(str), np.asarray(fb.video_ids).astype(str))
        )
        if not same:
            raise ValueError(
                f"dataset {name!r}: a and b do not score the same frames in the same order "
                f"({len(fa.labels)} vs {len(fb.labels)} frames, or labels/video ids differ): a paired difference "
                "needs both models' scores of one frame list"
            )
    est_a, samples_a = _aucs(a, level, n_boot, seed, resample_as)
    est_b, samples_b = _aucs(b, level, n_boot, seed, resample_as)  # same seed, same designs: the same resamples
    return _interval(est_a - est_b, samples_a - samples_b, confidence)


def verdict(diff: Interval) -> Verdict:
    """``helped`` when the interval of a difference lies above 0, ``hurt`` below 0, else ``within noise``."""
    if diff.low > 0:
        return "helped"
    if diff.high < 0:
        return "hurt"
    return "within noise"


__all__ = ["Interval", "ScoredFrames", "bootstrap_auc", "paired_auc_difference", "percentile_interval", "resampled_auc",
           "verdict"]  # fmt: skip
