"""Every registered metric against an independent, deliberately naive computation (pair counts, threshold sweeps)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from mergekit_clip.metrics import (
    METRICS,
    UndefinedMetricWarning,
    binary_accuracy_score,
    binary_ap_score,
    binary_auc_score,
    binary_balanced_accuracy_score,
    binary_brier_error,
    binary_ece_error,
    binary_eer_all_thresholds_error,
    binary_eer_error,
    binary_eer_interpolated_error,
    binary_log_loss_error,
    binary_tpr_at_fpr_score,
    choose_threshold,
    compute_metrics,
    group_auc_scores,
    register,
    selection_metric_names,
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


def test_eer_all_thresholds_matches_brute_force_nearest_point(sample):
    y, s = sample
    assert binary_eer_all_thresholds_error(y, s) == pytest.approx(brute_eer(y, s), abs=1e-12)


def dfb_points(y, s):
    """The sweep's ROC points minus collinear interior ones (what sklearn's drop_intermediate keeps)."""
    rows = sweep(y, s)
    fps = [r[1] * (np.asarray(y) == 0).sum() for r in rows]
    tps = [r[4] * (np.asarray(y) == 1).sum() for r in rows]
    keep = [0]
    for k in range(1, len(rows) - 1):
        collinear = fps[k - 1] - 2 * fps[k] + fps[k + 1] == 0 and tps[k - 1] - 2 * tps[k] + tps[k + 1] == 0
        if not collinear:
            keep.append(k)
    keep.append(len(rows) - 1)
    return [rows[k] for k in keep]


def test_eer_is_deepfakebench_rule_on_default_roc_points(sample):
    y, s = sample
    best = min(dfb_points(y, s), key=lambda r: abs(r[2] - r[1]))
    assert binary_eer_error(y, s) == pytest.approx(best[1], abs=1e-12)


def test_eer_six_frame_example_differs_by_definition():
    # DeepfakeBench's evaluator skips the dropped point nearest FNR = FPR: 0.0 where every threshold gives 1/3
    y, s = [0, 0, 0, 1, 1, 1], [0.2, 0.3, 0.4, 0.1, 0.5, 0.5]
    assert binary_eer_error(y, s) == 0.0
    assert binary_eer_all_thresholds_error(y, s) == pytest.approx(1 / 3)


def test_eer_interpolated_matches_brentq_on_the_roc(sample):
    from scipy.optimize import brentq

    y, s = sample
    rows = sweep(y, s)  # ROC points from threshold +inf down: (fpr, 1 - fnr) pairs
    fpr, tpr = np.array([r[1] for r in rows]), np.array([1 - r[2] for r in rows])
    u = np.arange(len(rows), dtype=float)  # walk the ROC polyline by arc index, so vertical steps are fine
    crossing = brentq(lambda x: np.interp(x, u, tpr) + np.interp(x, u, fpr) - 1.0, 0.0, len(rows) - 1.0, xtol=1e-14)
    assert binary_eer_interpolated_error(y, s) == pytest.approx(np.interp(crossing, u, fpr), abs=1e-9)


def test_tpr_at_fpr_matches_sweep(sample):
    y, s = sample
    for budget in (0.01, 0.05, 0.2):
        expected = max(r[4] for r in sweep(y, s) if r[1] <= budget)
        assert binary_tpr_at_fpr_score(y, s, budget) == pytest.approx(expected)


def test_ece_and_brier_match_loops(sample):
    y, s = sample
    total = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        members = [(t, v) for t, v in zip(y, s) if lo <= v < hi or (b == 14 and v == 1.0)]
        if members:
            gap = abs(np.mean([t for t, _ in members]) - np.mean([v for _, v in members]))
            total += len(members) / len(y) * gap
    assert binary_ece_error(y, s) == pytest.approx(total, abs=1e-12)
    assert binary_brier_error(y, s) == pytest.approx(sum((v - t) ** 2 for t, v in zip(y, s)) / len(y))


def test_log_loss_matches_sklearn_and_clips_certain_mistakes(sample):
    from sklearn.metrics import log_loss

    y, s = sample
    assert binary_log_loss_error(y, s) == pytest.approx(log_loss(y, np.clip(s, 1e-7, 1 - 1e-7), labels=[0, 1]))
    # a certain mistake costs -log(1e-7) (finite), a certain hit ~0
    assert binary_log_loss_error([1, 0], [0.0, 0.0]) == pytest.approx(-np.log(1e-7) / 2, rel=1e-6)
    assert binary_log_loss_error([1], [1.0]) < 1e-6
    assert math.isnan(binary_log_loss_error([], []))


def test_perfectly_calibrated_scores_have_zero_ece():
    s = np.repeat([0.1, 0.5, 0.9], 10)
    y = np.concatenate([[1] + [0] * 9, [1] * 5 + [0] * 5, [1] * 9 + [0]])
    assert binary_ece_error(y, s) == pytest.approx(0.0, abs=1e-12)
    assert binary_ece_error([1, 1], [0.0, 0.0]) == 1.0


def test_val_threshold_maximises_youden_j(sample):
    y, s = sample
    t = choose_threshold(y, s)
    pred = s > t
    j = pred[y == 1].mean() - pred[y == 0].mean()
    best = max(r[4] - r[1] for r in sweep(y, s))  # every threshold of the sweep, "fake if >= t"
    assert j == pytest.approx(best, abs=1e-12)
    got = compute_metrics(y, s, [str(i) for i in range(len(y))], val_threshold=t)
    assert got["acc_val_threshold"] == pytest.approx(np.mean(pred == y))
    assert math.isnan(compute_metrics(y, s, [str(i) for i in range(len(y))])["acc_val_threshold"])


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

    # DeepfakeBench's parent pooling merges fakes and reals sharing a folder name: 4 videos, label = floor of the
    # mean frame label, so a pooled video holding a real frame is real
    vy, vs, vid = video_level(y, s, [video_key(p, "parent") for p in paths])
    assert vid == ["000", "001", "002", "003"] and (vy == 0).all()
    for k, name in enumerate(vid):
        assert vs[k] == pytest.approx(np.mean([v for p, v in zip(paths, s) if f"/{name}/" in p]))
    fakes_only = [i for i, p in enumerate(paths) if "original" not in p]
    vy, _, _ = video_level(np.asarray(y)[fakes_only], np.asarray(s)[fakes_only], [vid[0]] * len(fakes_only))
    assert vy.tolist() == [1]


@pytest.mark.parametrize("aggregate,reduce", [("median", np.median), ("max", np.max), ("mean", np.mean)])
def test_video_aggregates_match_per_video_loop(aggregate, reduce):
    rng = np.random.default_rng(5)
    ids = [f"v{int(k)}" for k in rng.integers(0, 7, 40)]
    y = [int(i[1:]) % 2 for i in ids]
    s = rng.random(40)
    vy, vs, vid = video_level(y, s, ids, aggregate)
    for k, name in enumerate(vid):
        assert vs[k] == pytest.approx(reduce([v for i, v in zip(ids, s) if i == name]))
        assert vy[k] == int(name[1:]) % 2
    with pytest.raises(ValueError, match="mean"):
        video_level(y, s, ids, "mode")


def test_group_auc_is_each_fake_group_against_all_reals():
    rng = np.random.default_rng(2)
    groups = rng.choice(["FF-real", "FF-DF", "FF-F2F", "FF-FS", "FF-NT"], 80).tolist()
    y = [0 if g == "FF-real" else 1 for g in groups]
    s = np.round(rng.random(80) + 0.2 * np.asarray(y), 2)
    got = group_auc_scores(y, s, groups)
    assert sorted(got) == ["FF-DF", "FF-F2F", "FF-FS", "FF-NT"]
    for name, value in got.items():
        keep = [i for i, g in enumerate(groups) if g in (name, "FF-real")]
        assert value == pytest.approx(pair_count_auc([y[i] for i in keep], [s[i] for i in keep]))
    assert compute_metrics(y, s, groups, groups=groups)["group_auc"] == got


def test_registry_entries_are_documented_and_computed():
    y, s = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    out = compute_metrics(y, s, ["a", "a", "b", "b", "c", "d"], val_threshold=0.3)
    for name, metric in METRICS.items():
        doc = metric.function.__doc__ or ""
        assert ">>>" in doc or "binary_tpr_at_fpr_score" in doc, name  # a doctest or a pointer to the one that has it
        suffix = "_score" if metric.higher_is_better else "_error"
        assert metric.function.__name__.endswith(suffix), name  # sklearn's naming: *_score up, *_error down
        assert name in out and isinstance(out[name], float) and not math.isnan(out[name]), name
    assert "frame_auc" in selection_metric_names() and "eer" not in selection_metric_names()
    register(METRICS["ap"])  # the same object again is a no-op
    with pytest.raises(ValueError, match="already registered"):
        register(type(METRICS["ap"])("ap", binary_auc_score, True, True, "frame", "another"))


def test_single_class_marks_only_two_class_metrics_nan():
    with pytest.warns(UndefinedMetricWarning):
        out = compute_metrics([1, 1, 1], [0.2, 0.7, 0.9], ["a", "b", "c"])
    for name, metric in METRICS.items():
        if metric.uses_val_threshold:
            continue
        assert math.isnan(out[name]) == metric.needs_both_classes, name


def test_doctests():
    import doctest

    import mergekit_clip.metrics as module

    assert doctest.testmod(module).failed == 0
