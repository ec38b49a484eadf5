"""Binary deepfake-detection metrics, as the field publishes them (DeepfakeBench conventions), via scikit-learn.

Inputs are never mutated. ``labels`` are 0 (real) / 1 (fake); ``scores`` are probabilities of *fake* in
[0, 1] (not logits: the 0.5 threshold of the accuracies assumes probabilities). Shapes are ``(n,)``.

Undefined values: AUC, EER and AP need both classes; on single-class input they are ``nan`` and a
:class:`UndefinedMetricWarning` is emitted, never an exception (a cross-dataset table must still be written).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.metrics import auc, average_precision_score, balanced_accuracy_score, roc_curve

THRESHOLD = 0.5  # a frame is called fake when P(fake) > THRESHOLD (DeepfakeBench uses a strict ">")
VideoIdMode = Literal["full", "parent"]


class UndefinedMetricWarning(UserWarning):
    """A metric that needs both classes was asked for on single-class input."""


def _as_arrays(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels).astype(np.int64, copy=True).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).copy().reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()))[:6]}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite value(s)")
    return y, s


def _both_classes(y: np.ndarray, metric: str) -> bool:
    if np.unique(y).size == 2:
        return True
    present = "no samples" if y.size == 0 else f"only label {int(y[0])}"
    warnings.warn(f"{metric} is undefined with {present}; reporting nan", UndefinedMetricWarning, stacklevel=3)
    return False


def binary_auc_score(labels, scores) -> float:
    """Area under the ROC curve, ``auc(roc_curve(...))``; ties count one half.

    Equals P(score of a random fake > score of a random real) + 0.5 P(equal).

    >>> binary_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "AUC"):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, pos_label=1)
    return float(auc(fpr, tpr))


def binary_eer_error(labels, scores) -> float:
    """Equal error rate, DeepfakeBench's definition: the FPR at the ROC point where |FNR - FPR| is smallest.

    Over every distinct threshold (FNR = 1 - TPR), take the first point (highest threshold) minimising
    |FNR - FPR| and return its **FPR** (torchmetrics would return (FPR + FNR) / 2 instead; we keep
    DeepfakeBench's number so tables compare with published ones). No interpolation between ROC points.
    Unlike DeepfakeBench we call ``roc_curve(drop_intermediate=False)``: the default drops collinear points,
    and on a flat ROC stretch the point nearest FNR = FPR may be one of them (both agree otherwise).

    >>> binary_eer_error([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.5
    """
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "EER"):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    fnr = 1.0 - tpr
    return float(fpr[int(np.argmin(np.abs(fnr - fpr)))])


def binary_ap_score(labels, scores) -> float:
    """Average precision with fake as the positive class (``average_precision_score``, step-wise, no interpolation).

    >>> round(binary_ap_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "AP"):
        return math.nan
    return float(average_precision_score(y, s, pos_label=1))


def binary_accuracy_score(labels, scores, threshold: float = THRESHOLD) -> float:
    """Fraction of frames with ``(score > threshold) == label``; ``nan`` on empty input.

    >>> binary_accuracy_score([0, 0, 1, 1], [0.1, 0.6, 0.35, 0.8])
    0.5
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        return math.nan
    return float(np.mean((s > threshold).astype(np.int64) == y))


def binary_balanced_accuracy_score(labels, scores, threshold: float = THRESHOLD) -> float:
    """Mean of the recall on reals and the recall on fakes at ``threshold`` (``balanced_accuracy_score``).

    With a single class present it is that class's recall. ``nan`` on empty input.

    >>> binary_balanced_accuracy_score([0, 0, 0, 1], [0.1, 0.2, 0.9, 0.8])
    0.8333333333333333
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        return math.nan
    pred = (s > threshold).astype(np.int64)
    with warnings.catch_warnings():
        # sklearn warns when a predicted class is absent from y_true; its value is still the recall we want.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def video_key(frame_path: str, mode: VideoIdMode = "full") -> str:
    """The video a frame belongs to: its full directory (``full``) or only that directory's name (``parent``).

    ``parent`` reproduces DeepfakeBench's pooling, which merges FF++ fakes of different methods that share a
    folder name such as ``001_870``; ``full`` keeps them apart.
    """
    normalized = str(frame_path).replace("\\", "/").rstrip("/")
    directory = normalized.rsplit("/", 1)[0] if "/" in normalized else ""
    if mode == "full":
        return directory
    if mode == "parent":
        return directory.rsplit("/", 1)[-1]
    raise ValueError(f"video id mode must be 'full' or 'parent', got {mode!r}")


def video_level(labels, scores, video_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pool frames into videos: mean P(fake) per video; the video label is the max of its frame labels.

    The max matters only for ``parent`` pooling, where a folder name can be shared by a real and a fake
    video; such a pooled video counts as fake, as in DeepfakeBench. Returns (labels, scores, ids) sorted by id.
    """
    y, s = _as_arrays(labels, scores)
    ids = list(video_ids)
    if len(ids) != y.size:
        raise ValueError(f"{len(ids)} video ids for {y.size} frames")
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0), []
    unique, inverse = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=unique.size)
    mean = np.bincount(inverse, weights=s, minlength=unique.size) / counts
    label = np.zeros(unique.size, np.int64)
    np.maximum.at(label, inverse, y)
    return label, mean, unique.tolist()


METRIC_NAMES = ("frame_auc", "video_auc", "eer", "ap", "acc", "balanced_acc")


def compute_metrics(labels, scores, video_ids: Sequence[str]) -> dict[str, float]:
    """All reported metrics for one model on one dataset (keys: :data:`METRIC_NAMES`, plus counts)."""
    y, s = _as_arrays(labels, scores)
    video_y, video_s, videos = video_level(y, s, video_ids)
    return {
        "frame_auc": binary_auc_score(y, s),
        "video_auc": binary_auc_score(video_y, video_s),
        "eer": binary_eer_error(y, s),
        "ap": binary_ap_score(y, s),
        "acc": binary_accuracy_score(y, s),
        "balanced_acc": binary_balanced_accuracy_score(y, s),
        "frames": int(y.size),
        "videos": len(videos),
        "fake_frames": int(y.sum()),
    }
