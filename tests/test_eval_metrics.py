"""Every metric against an independent, deliberately naive computation (pair counts, threshold sweeps)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from eval.metrics import (
    UndefinedMetricWarning,
    binary_accuracy_score,
    binary_ap_score,
    binary_auc_score,
    binary_balanced_accuracy_score,
    binary_eer_error,
    compute_metrics,
    video_key,
    video_level,
)


def pair_count_auc(y, s):
    pos, neg = [v for v, t in zip(s, y) if t == 1], [v for v, t in zip(s, y) if t == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def sweep(y, s):
    """(threshold, FPR, FNR, precision, recall) for 'fake if score >= t', t from +inf down over distinct scores."""
    y, s = np.asarray(y), np.asarray(s)
    rows = []
    for t in [math.inf, *sorted(set(s.tolist()), reverse=True)]:
        pred = s >= t
        tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
        fn, tn = int((~pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())
        prec = tp / (tp + fp) if tp + fp else 1.0
        rows.append((t, fp / (fp + tn), fn / (fn + tp), prec, tp / (tp + fn)))
    return rows


def brute_eer(y, s):
    best = min(sweep(y, s), key=lambda r: abs(r[2] - r[1]))  # min() keeps the first (highest threshold) on ties
    return best[1]


def brute_ap(y, s):
    rows = sweep(y, s)
    return sum((rows[k][4] - rows[k - 1][4]) * rows[k][3] for k in range(1, len(rows)))


@pytest.fixture(params=range(6))
def sample(request):
    rng = np.random.default_rng(request.param)
    n = int(rng.integers(8, 60))
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    # coarse scores force ties, the case where AUC and EER definitions differ most
    s = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1), 1 if request.param % 2 else 3)
    return y, s


def test_auc_matches_pair_count_with_ties(sample):
    y, s = sample
    assert binary_auc_score(y, s) == pytest.approx(pair_count_auc(y, s), abs=1e-12)


def test_eer_matches_brute_force_nearest_point(sample):
    y, s = sample
    assert binary_eer_error(y, s) == pytest.approx(brute_eer(y, s), abs=1e-12)


def test_ap_matches_step_sum(sample):
    y, s = sample
    assert binary_ap_score(y, s) == pytest.approx(brute_ap(y, s), abs=1e-12)


def test_accuracies_match_counts(sample):
    y, s = sample
    pred = (s > 0.5).astype(int)  # strict, as DeepfakeBench
    assert binary_accuracy_score(y, s) == pytest.approx(np.mean(pred == y))
    tpr = np.mean(pred[y == 1] == 1)
    tnr = np.mean(pred[y == 0] == 0)
    assert binary_balanced_accuracy_score(y, s) == pytest.approx((tpr + tnr) / 2)


def test_threshold_is_strict():
    assert binary_accuracy_score([0, 1], [0.5, 0.5]) == 0.5  # 0.5 is "real"


def test_eer_known_values():
    assert binary_eer_error([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert binary_eer_error([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0


def test_single_class_is_nan_with_warning_not_an_error():
    y, s = [1, 1, 1], [0.2, 0.7, 0.9]
    for metric in (binary_auc_score, binary_eer_error, binary_ap_score):
        with pytest.warns(UndefinedMetricWarning, match="only label 1"):
            assert math.isnan(metric(y, s))
    assert binary_accuracy_score(y, s) == pytest.approx(2 / 3)
    assert binary_balanced_accuracy_score(y, s) == pytest.approx(2 / 3)
    with pytest.warns(UndefinedMetricWarning):
        out = compute_metrics(y, s, ["a/v1", "a/v1", "a/v2"])
    assert math.isnan(out["frame_auc"]) and math.isnan(out["video_auc"]) and out["frames"] == 3


def test_inputs_are_not_mutated():
    y, s = np.array([0, 1, 1, 0]), np.array([0.3, 0.6, 0.2, 0.1])
    y0, s0 = y.copy(), s.copy()
    compute_metrics(y, s, ["a", "b", "c", "d"])
    assert (y == y0).all() and (s == s0).all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in length"):
        binary_auc_score([0, 1], [0.1])
    with pytest.raises(ValueError, match="labels must be 0"):
        binary_auc_score([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-finite"):
        binary_auc_score([0, 1], [0.1, float("nan")])


def test_video_key_full_and_parent():
    win = "FaceForensics++\\manipulated_sequences\\Deepfakes\\c23\\frames\\001_870\\12.png"
    assert video_key(win) == "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/001_870"
    assert video_key(win, "parent") == "001_870"
    with pytest.raises(ValueError, match="full"):
        video_key(win, "name")


def test_video_auc_pools_mean_probability_per_video():
    rng = np.random.default_rng(3)
    paths, y, s = [], [], []
    for method in ("Deepfakes", "Face2Face", "original"):
        for v in range(4):
            label = int(method != "original")
            for f in range(int(rng.integers(1, 5))):
                paths.append(f"ff/{method}/{v:03d}/{f}.png")
                y.append(label)
                s.append(float(rng.random()))
    groups = defaultdict(list)
    labels = {}
    for p, t, v in zip(paths, y, s):
        groups[p.rsplit("/", 1)[0]].append(v)
        labels[p.rsplit("/", 1)[0]] = t
    keys = sorted(groups)
    expected = pair_count_auc([labels[k] for k in keys], [np.mean(groups[k]) for k in keys])
    ids = [video_key(p) for p in paths]
    assert compute_metrics(y, s, ids)["video_auc"] == pytest.approx(expected)
    assert compute_metrics(y, s, ids)["videos"] == 12

    # DeepfakeBench's parent pooling merges fakes and reals sharing a folder name: 4 videos, label = max
    vy, vs, vid = video_level(y, s, [video_key(p, "parent") for p in paths])
    assert vid == ["000", "001", "002", "003"] and (vy == 1).all()
    for k, name in enumerate(vid):
        assert vs[k] == pytest.approx(np.mean([v for p, v in zip(paths, s) if f"/{name}/" in p]))
