"""Binary deepfake-detection metrics, defined once: the registry train, eval, soups and studies all read.

Inputs are never mutated. ``labels`` are 0 (real) / 1 (fake); ``scores`` are probabilities of *fake* in
[0, 1] (not logits: thresholds, ECE and Brier assume probabilities). Shapes are ``(n,)``.

Undefined values: metrics that need both classes (AUC, EER, AP, TPR at FPR) are ``nan`` on single-class input
and emit an :class:`UndefinedMetricWarning`, never an exception (a cross-dataset table must still be written);
every metric is ``nan`` on empty input.

Names follow DeepfakeBench where a metric is DeepfakeBench's (``frame_auc``, ``video_auc``, ``eer``, ``ap``,
``acc``): those reproduce its evaluator (``training/metrics/utils.py``) exactly, including its EER on
scikit-learn's default ROC points and its ``parent`` video pooling rule. Better-behaved variants carry their own
names (``eer_all_thresholds``, ``eer_interpolated``).

Adding a metric: write one ``binary_*_score`` / ``binary_*_error`` function and add one :func:`register` line at the
bottom of this file; the report, the CSV, soup selection and the CLI choices pick it up.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import auc, average_precision_score, balanced_accuracy_score, roc_curve

from mergekit_clip.registry import add_entry, get_entry

THRESHOLD = 0.5  # a frame is called fake when P(fake) > THRESHOLD (DeepfakeBench uses a strict ">")
ECE_BINS = 15  # equal-width bins of P(fake) for the calibration error and the reliability diagram
VideoIdMode = Literal["full", "parent"]
VideoAggregate = Literal["mean", "median", "max"]
VIDEO_AGGREGATES: tuple[str, ...] = ("mean", "median", "max")
Level = Literal["frame", "video"]


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


# ---------------------------------------------------------------- ranking metrics (need both classes)


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


def _nearest_point_eer(labels, scores, drop_intermediate: bool) -> float:
    """The FPR of the first ROC point minimising |FNR - FPR| (nan for single-class input)."""
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "EER"):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, pos_label=1, drop_intermediate=drop_intermediate)
    fnr = 1.0 - tpr
    return float(fpr[int(np.nanargmin(np.abs(fnr - fpr)))])


def binary_eer_error(labels, scores) -> float:
    """Equal error rate exactly as DeepfakeBench's evaluator computes it: ``fpr[nanargmin(|fnr - fpr|)]``.

    The ROC points are scikit-learn's **default** ``roc_curve`` (``drop_intermediate=True``), which drops
    collinear points, so the nearest point to FNR = FPR can be skipped; the first (highest-threshold) minimiser
    wins and its **FPR** is returned (torchmetrics returns (FPR + FNR) / 2). See :func:`binary_eer_all_thresholds_error`
    and :func:`binary_eer_interpolated_error` for the better-behaved variants. On this 6-frame example DeepfakeBench's
    rule gives 0.0 where every threshold's nearest point gives 1/3:

    >>> binary_eer_error([0, 0, 0, 1, 1, 1], [0.2, 0.3, 0.4, 0.1, 0.5, 0.5])
    0.0
    >>> binary_eer_error([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.5
    """
    return _nearest_point_eer(labels, scores, drop_intermediate=True)


def binary_eer_all_thresholds_error(labels, scores) -> float:
    """EER over every distinct threshold: the FPR of the first ROC point minimising |FNR - FPR|, no interpolation.

    Same rule as :func:`binary_eer_error` on ``roc_curve(drop_intermediate=False)``.

    >>> round(binary_eer_all_thresholds_error([0, 0, 0, 1, 1, 1], [0.2, 0.3, 0.4, 0.1, 0.5, 0.5]), 4)
    0.3333
    """
    return _nearest_point_eer(labels, scores, drop_intermediate=False)


def binary_eer_interpolated_error(labels, scores) -> float:
    """EER where the piecewise-linear ROC crosses FNR = FPR (GenD's ``brentq(1 - x - interp1d(fpr, tpr)(x))``).

    Along the ROC polyline ``g = tpr + fpr - 1`` never decreases; on the first segment where it reaches 0 the
    crossing is found by linear interpolation (on a vertical segment it is that segment's FPR).

    >>> binary_eer_interpolated_error([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.5
    >>> round(binary_eer_interpolated_error([0, 0, 0, 1, 1, 1], [0.2, 0.3, 0.4, 0.1, 0.5, 0.5]), 4)
    0.3333
    """
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "EER"):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    g = tpr + fpr - 1.0
    k = int(np.argmax(g >= 0))  # first point at or past the diagonal FNR = FPR; g[0] = -1, g[-1] = 1
    g0, g1 = g[k - 1], g[k]
    lam = -g0 / (g1 - g0)
    return float(fpr[k - 1] + lam * (fpr[k] - fpr[k - 1]))


def binary_ap_score(labels, scores) -> float:
    """Average precision with fake as the positive class (``average_precision_score``, step-wise, no interpolation).

    >>> round(binary_ap_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "AP"):
        return math.nan
    return float(average_precision_score(y, s, pos_label=1))


def binary_tpr_at_fpr_score(labels, scores, max_fpr: float) -> float:
    """The highest TPR among ROC points with FPR <= ``max_fpr`` (every threshold, no interpolation).

    A detector flagging fakes at a fixed false-alarm budget. With fewer than ``1 / max_fpr`` reals only
    thresholds with no false positive qualify.

    >>> binary_tpr_at_fpr_score([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.8, 0.95], max_fpr=0.25)
    1.0
    >>> binary_tpr_at_fpr_score([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.8, 0.95], max_fpr=0.01)
    0.5
    """
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "TPR at FPR"):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    # fpr is a ratio of integers: a tiny tolerance keeps FPR exactly max_fpr (e.g. 1/100) inside the budget
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def binary_tpr_at_fpr_1pct_score(labels, scores) -> float:
    """TPR at FPR <= 1 % (:func:`binary_tpr_at_fpr_score`).

    >>> binary_tpr_at_fpr_1pct_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.5
    """
    return binary_tpr_at_fpr_score(labels, scores, 0.01)


def binary_tpr_at_fpr_5pct_score(labels, scores) -> float:
    """TPR at FPR <= 5 % (:func:`binary_tpr_at_fpr_score`).

    >>> binary_tpr_at_fpr_5pct_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.5
    """
    return binary_tpr_at_fpr_score(labels, scores, 0.05)


# ---------------------------------------------------------------- thresholded and calibration metrics


def binary_accuracy_score(labels, scores, threshold: float = THRESHOLD) -> float:
    """Fraction of frames with ``(score > threshold) == label``; ``nan`` on empty input (or a ``nan`` threshold).

    >>> binary_accuracy_score([0, 0, 1, 1], [0.1, 0.6, 0.35, 0.8])
    0.5
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0 or not math.isfinite(threshold):
        return math.nan
    return float(np.mean((s > threshold).astype(np.int64) == y))


def binary_balanced_accuracy_score(labels, scores, threshold: float = THRESHOLD) -> float:
    """Mean of the recall on reals and the recall on fakes at ``threshold`` (``balanced_accuracy_score``).

    With a single class present it is that class's recall. ``nan`` on empty input.

    >>> binary_balanced_accuracy_score([0, 0, 0, 1], [0.1, 0.2, 0.9, 0.8])
    0.8333333333333333
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0 or not math.isfinite(threshold):
        return math.nan
    pred = (s > threshold).astype(np.int64)
    with warnings.catch_warnings():
        # sklearn warns when a predicted class is absent from y_true; its value is still the recall we want.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def choose_threshold(labels, scores) -> float:
    """The threshold (for ``score > t``) that maximises Youden's J = TPR - FPR (= balanced accuracy) on ``labels``.

    Meant for a source-domain validation split: the chosen ``t`` is then applied to test sets
    (``acc_val_threshold``). Candidates sit half-way between consecutive distinct scores (plus "all fake" and "all
    real"); ties go to the candidate nearest 0.5. ``nan`` unless both classes are present.

    >>> round(choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]), 6)
    0.45
    """
    y, s = _as_arrays(labels, scores)
    if not _both_classes(y, "threshold choice"):
        return math.nan
    fpr, tpr, thresholds = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    # point i calls "fake" when s >= thresholds[i] (descending distinct scores after +inf); as a strict ">" rule
    # that is any t between thresholds[i] and the next lower score: take the midpoint (all real: the top score)
    lower = np.append(thresholds[2:], np.nextafter(thresholds[-1], -np.inf))
    candidates = np.concatenate([[thresholds[1]], (thresholds[1:] + lower) / 2])
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - THRESHOLD))]])


def calibration_bins(labels, scores, n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins of P(fake) on [0, 1]: (count, mean P(fake), fraction fake) per bin, ``nan`` where empty.

    Bin ``b`` holds ``b / n_bins <= s < (b + 1) / n_bins``; the last bin also holds ``s = 1``.
    """
    y, s = _as_arrays(labels, scores)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    index = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(index, weights=s, minlength=n_bins) / count
        frac_fake = np.bincount(index, weights=y.astype(np.float64), minlength=n_bins) / count
    return count, mean_score, frac_fake


def binary_ece_error(labels, scores, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(fake): ``sum_b |B_b| / n * |frac_fake(B_b) - mean_score(B_b)|``.

    Equal-width bins (:func:`calibration_bins`, 15 by default); the gap is between the predicted probability of
    fake and the observed fraction of fakes in the bin (the reliability diagram's distance from the diagonal).
    Defined on single-class input; ``nan`` on empty input.

    >>> round(binary_ece_error([0, 1, 1, 1], [0.1, 0.9, 0.9, 0.6], n_bins=10), 4)
    0.175
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        return math.nan
    count, mean_score, frac_fake = calibration_bins(y, s, n_bins)
    used = count > 0
    return float(np.sum(count[used] / y.size * np.abs(frac_fake[used] - mean_score[used])))


def binary_brier_error(labels, scores) -> float:
    """Brier score, ``mean((score - label)^2)``: 0 is perfect, 0.25 is a constant 0.5. ``nan`` on empty input.

    >>> binary_brier_error([0, 1], [0.2, 0.6])
    0.1
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        return math.nan
    return float(np.round(np.mean((s - y) ** 2), 15))


LOG_LOSS_EPS = 1e-7  # P(fake) is clipped to [eps, 1 - eps]: one confident mistake costs ~16, not infinity


def binary_log_loss_error(labels, scores) -> float:
    """Binary cross-entropy, ``-mean(y log p + (1 - y) log(1 - p))`` with ``p`` clipped to ``[1e-7, 1 - 1e-7]``.

    Unlike AUC it keeps ranking models once their AUC saturates (every fake above every real), so a study uses it
    to break ties of its selection metric on source val. ``nan`` on empty input.

    >>> round(binary_log_loss_error([0, 1], [0.2, 0.6]), 6)
    0.366985
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0:
        return math.nan
    p = np.clip(s, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


# ---------------------------------------------------------------- videos and label groups


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


def video_level(
    labels, scores, video_ids: Sequence[str], aggregate: VideoAggregate = "mean"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pool frames into videos: the ``aggregate`` (mean, median or max) of P(fake) per video.

    The video label is the floor of the mean frame label, as DeepfakeBench: a pooled video is fake only if every
    frame is. This matters only for ``parent`` pooling, where a folder name can be shared by a real and a fake
    video (with ``full`` ids every video has one label). Returns (labels, scores, ids) sorted by id.

    >>> video_level([0, 1, 1, 1], [0.2, 0.6, 0.8, 0.9], ["a", "a", "b", "b"])
    (array([0, 1]), array([0.4 , 0.85]), ['a', 'b'])
    """
    y, s = _as_arrays(labels, scores)
    ids = list(video_ids)
    if len(ids) != y.size:
        raise ValueError(f"{len(ids)} video ids for {y.size} frames")
    if aggregate not in VIDEO_AGGREGATES:
        raise ValueError(f"video aggregate must be one of {list(VIDEO_AGGREGATES)}, got {aggregate!r}")
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0), []
    unique, inverse = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=unique.size)
    label = np.floor(np.bincount(inverse, weights=y, minlength=unique.size) / counts + 1e-9).astype(np.int64)
    if aggregate == "mean":
        pooled = np.bincount(inverse, weights=s, minlength=unique.size) / counts
    else:
        order = np.argsort(inverse, kind="stable")
        chunks = np.split(s[order], np.cumsum(counts)[:-1])
        reduce = np.median if aggregate == "median" else np.max
        pooled = np.asarray([float(reduce(c)) for c in chunks])
    return label, pooled, unique.tolist()


def group_auc_scores(labels, scores, groups: Sequence[str]) -> dict[str, float]:
    """Per-label-group AUC: the fakes of each group against **all** reals (e.g. FF-DF, FF-F2F, FF-FS, FF-NT of FF++).

    ``groups[i]`` is frame ``i``'s label group (the dataset JSON's group key). Groups holding only reals are not
    scored; each fake group is ``binary_auc_score`` on (its frames + every real frame). Sorted by group name.

    >>> group_auc_scores([0, 0, 1, 1], [0.2, 0.4, 0.3, 0.9], ["real", "real", "A", "B"])
    {'A': 0.5, 'B': 1.0}
    """
    y, s = _as_arrays(labels, scores)
    g = np.asarray([str(v) for v in groups], dtype=object)
    if g.size != y.size:
        raise ValueError(f"{g.size} label groups for {y.size} frames")
    real = y == 0
    out = {}
    for name in sorted(set(g[y == 1].tolist())):
        keep = real | ((g == name) & (y == 1))
        out[name] = binary_auc_score(y[keep], s[keep])
    return out


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Metric:
    """One registered metric: ``function(labels, scores) -> float`` applied to frames or to pooled videos."""

    name: str
    function: Callable[..., float]
    higher_is_better: bool
    needs_both_classes: bool
    level: Level
    description: str
    uses_val_threshold: bool = False  # called with ``threshold=`` chosen on source val; nan without one


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric``; re-registering the same object is a no-op, a different one under a taken name an error."""
    return add_entry(METRICS, metric.name, metric, "metric")


def get_metric(name: str) -> Metric:
    return get_entry(METRICS, name, "metric")


def metric_names(level: Level | None = None) -> tuple[str, ...]:
    """Registered names in registration order (the report's column order), optionally of one level."""
    return tuple(n for n, m in METRICS.items() if level is None or m.level == level)


def selection_metric_names() -> tuple[str, ...]:
    """Metrics a greedy soup or a study can select on: higher is better and no val threshold needed."""
    return tuple(n for n, m in METRICS.items() if m.higher_is_better and not m.uses_val_threshold)


def require_selection_metric(name: str, what: str = "metric") -> str:
    """``name`` if it is a selection metric now (see :func:`selection_metric_names`), else a ValueError listing them."""
    if name not in selection_metric_names():
        raise ValueError(f"{what} {name!r}: choose a selection metric from {list(selection_metric_names())}")
    return name


def lower_is_better() -> frozenset[str]:
    return frozenset(n for n, m in METRICS.items() if not m.higher_is_better)


def _m(name, function, higher, both, level, description, **kw) -> None:
    register(Metric(name, function, higher, both, level, description, **kw))


_m("frame_auc", binary_auc_score, True, True, "frame", "ROC AUC over frames (DeepfakeBench)")
_m("video_auc", binary_auc_score, True, True, "video", "ROC AUC over videos, frames pooled by --video-aggregate")
_m("eer", binary_eer_error, False, True, "frame", "EER, DeepfakeBench's rule on sklearn's default ROC points")
_m("eer_all_thresholds", binary_eer_all_thresholds_error, False, True, "frame", "EER, nearest of every ROC point")
_m("eer_interpolated", binary_eer_interpolated_error, False, True, "frame", "EER, ROC interpolated (GenD's brentq)")
_m("ap", binary_ap_score, True, True, "frame", "average precision, fake positive (DeepfakeBench)")
_m("acc", binary_accuracy_score, True, False, "frame", "accuracy, fake when P(fake) > 0.5 (DeepfakeBench)")
_m("acc_val_threshold", binary_accuracy_score, True, False, "frame", "accuracy at the threshold chosen on source val",
   uses_val_threshold=True)  # fmt: skip
_m("balanced_acc", binary_balanced_accuracy_score, True, False, "frame", "mean of real and fake recall at 0.5")
_m("tpr_at_fpr_1pct", binary_tpr_at_fpr_1pct_score, True, True, "frame", "TPR at FPR <= 1 %")
_m("tpr_at_fpr_5pct", binary_tpr_at_fpr_5pct_score, True, True, "frame", "TPR at FPR <= 5 %")
_m("ece", binary_ece_error, False, False, "frame", f"expected calibration error of P(fake), {ECE_BINS} equal bins")
_m("brier", binary_brier_error, False, False, "frame", "Brier score, mean (P(fake) - label)^2")
_m("log_loss", binary_log_loss_error, False, False, "frame", "binary cross-entropy of P(fake), clipped at 1e-7")



def __getattr__(name: str):
    if name == "METRIC_NAMES":  # the old constant, now read from the registry each time (later metrics included)
        return metric_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compute_metrics(
    labels,
    scores,
    video_ids: Sequence[str],
    *,
    aggregate: VideoAggregate = "mean",
    val_threshold: float | None = None,
    groups: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, float | dict[str, float]]:
    """Every registered metric (or ``names``) for one model on one dataset, plus counts.

    Video-level metrics run on :func:`video_level` with ``aggregate``; ``acc_val_threshold`` uses
    ``val_threshold`` (``nan`` without one). With ``groups`` the result also holds ``group_auc``
    (:func:`group_auc_scores`).
    """
    y, s = _as_arrays(labels, scores)
    video_y, video_s, videos = video_level(y, s, video_ids, aggregate)
    out: dict[str, float | dict[str, float]] = {}
    for name in names or METRICS:
        metric = get_metric(name)
        args = (y, s) if metric.level == "frame" else (video_y, video_s)
        if metric.uses_val_threshold:
            out[name] = metric.function(*args, threshold=math.nan if val_threshold is None else float(val_threshold))
        else:
            out[name] = metric.function(*args)
    out.update(frames=int(y.size), videos=len(videos), fake_frames=int(y.sum()))
    if groups is not None:
        out["group_auc"] = group_auc_scores(y, s, groups)
    return out


def heldout_summary(labels, scores, names: Sequence[str] = ("frame_auc", "acc")) -> Mapping[str, float | None]:
    """Frame-level metrics for held-out scoring during training (``None`` where undefined, JSON-ready)."""
    y, s = _as_arrays(labels, scores)
    out = {}
    for name in names:
        metric = get_metric(name)
        if metric.level != "frame" or metric.uses_val_threshold:
            raise ValueError(f"held-out scoring needs a frame-level metric without a val threshold, not {name!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            value = metric.function(y, s)
        out[name] = None if math.isnan(value) else value
    return out
