"""Video-level bootstrap of AUC: exact point estimates, coverage on simulated videos, paired differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr
from sklearn.metrics import roc_auc_score

from eval.bootstrap import (
    Interval,
    ScoredFrames,
    _design,
    _weighted_auc,
    bootstrap_auc,
    paired_auc_difference,
    verdict,
)


def _videos(rng: np.random.Generator, n_videos: int, frames: int, d: float, video_var: float) -> ScoredFrames:
    """Binormal scores: real ~ N(0, 1), fake ~ N(d, 1) per frame, of which ``video_var`` is shared by a video.

    The population frame AUC is Phi(d / sqrt(2)) whatever ``video_var`` is; frames of one video correlate by
    ``video_var``.
    """
    labels = np.repeat([0, 1], n_videos * frames)
    video = np.repeat(np.arange(2 * n_videos), frames)
    effect = rng.normal(0, np.sqrt(video_var), 2 * n_videos)[video]
    scores = d * labels + effect + rng.normal(0, np.sqrt(1 - video_var), len(labels))
    return ScoredFrames(labels, scores, np.array([f"v{v:04d}" for v in video]))


def _frame_iid_interval(frames: ScoredFrames, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """The naive interval: frames resampled i.i.d. (stratified by label), AUC by rank sums (independent code)."""
    pos, neg = frames.scores[frames.labels == 1], frames.scores[frames.labels == 0]
    p = pos[rng.integers(0, len(pos), (n_boot, len(pos)))]
    n = neg[rng.integers(0, len(neg), (n_boot, len(neg)))]
    # continuous scores, no ties: a frame's rank is its position in the sorted resample
    ranks = np.argsort(np.argsort(np.concatenate([p, n], 1), axis=1), axis=1)[:, : len(pos)] + 1
    auc = (ranks.sum(1) - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
    return tuple(np.quantile(auc, [0.025, 0.975]))


def test_point_estimates_equal_sklearn_with_ties_and_several_datasets():
    rng = np.random.default_rng(0)
    a = _videos(rng, 30, 5, 0.8, 0.5)
    b = ScoredFrames(a.labels, np.round(a.scores, 1), a.video_ids)  # many tied scores
    ci = bootstrap_auc({"A": a, "B": b}, n_boot=50)
    expected = (roc_auc_score(a.labels, a.scores) + roc_auc_score(b.labels, b.scores)) / 2
    assert ci.estimate == pytest.approx(expected, abs=1e-12)
    assert ci.low <= ci.estimate <= ci.high and ci.confidence == 0.95
    # video level: AUC of the mean score per video
    ids, inverse = np.unique(b.video_ids, return_inverse=True)
    means = np.bincount(inverse, b.scores) / np.bincount(inverse)
    video_labels = np.bincount(inverse, b.labels) / np.bincount(inverse)
    got = bootstrap_auc({"B": b}, level="video", n_boot=10).estimate
    assert got == pytest.approx(roc_auc_score(video_labels, means), abs=1e-12)


def test_a_resample_weight_is_the_auc_of_the_repeated_frames():
    # the weighted statistic on draw counts equals sklearn on the frame list with each video repeated that often
    rng = np.random.default_rng(1)
    frames = _videos(rng, 12, 3, 0.6, 0.4)
    frames = ScoredFrames(frames.labels, np.round(frames.scores, 1), frames.video_ids)
    design, _ = _design("toy", frames, "frame")
    counts = rng.integers(0, 4, (5, len(design.video_labels))).astype(float)
    counts[:, 0] = counts[:, -1] = 1  # at least one real and one fake video drawn
    got = _weighted_auc(design, counts)
    ids = np.unique(frames.video_ids)
    video_rank = {v: i for i, v in enumerate(ids[np.argsort([frames.labels[frames.video_ids == v][0] for v in ids],
                                                             kind="stable")])}  # fmt: skip
    for row, auc in zip(counts, got):
        reps = np.array([row[video_rank[v]] for v in frames.video_ids]).astype(int)
        expected = roc_auc_score(np.repeat(frames.labels, reps), np.repeat(frames.scores, reps))
        assert auc == pytest.approx(expected, abs=1e-12)


def test_video_bootstrap_covers_the_true_auc_and_a_frame_bootstrap_does_not():
    d, sims, n_boot = 1.0, 150, 300
    true_auc = float(ndtr(d / np.sqrt(2)))
    rng = np.random.default_rng(2)
    video_hits = frame_hits = 0
    for sim in range(sims):
        frames = _videos(rng, 40, 8, d, video_var=0.8)  # strong within-video correlation
        ci = bootstrap_auc({"sim": frames}, n_boot=n_boot, seed=sim)
        video_hits += ci.low <= true_auc <= ci.high
        lo, hi = _frame_iid_interval(frames, n_boot, rng)
        frame_hits += lo <= true_auc <= hi
    # 150 simulations: binomial sd of a 95 % coverage is 0.018
    assert 0.89 <= video_hits / sims <= 0.99, video_hits / sims
    assert frame_hits / sims < 0.75, frame_hits / sims  # i.i.d. frames: intervals far too narrow


def test_video_level_coverage():
    d, sims, frames_per_video, video_var = 1.0, 100, 6, 0.6
    # mean of m frames per video ~ N(d y, video_var + (1 - video_var) / m)
    true_auc = float(ndtr(d / np.sqrt(2 * (video_var + (1 - video_var) / frames_per_video))))
    rng = np.random.default_rng(3)
    hits = sum(
        (ci := bootstrap_auc({"sim": _videos(rng, 40, frames_per_video, d, video_var)}, level="video", n_boot=300,
                             seed=s)).low <= true_auc <= ci.high
        for s in range(sims)
    )  # fmt: skip
    assert 0.87 <= hits / sims <= 1.0, hits / sims


def test_seeded_and_resamples_independent_per_dataset():
    rng = np.random.default_rng(4)
    a, b = _videos(rng, 20, 4, 1.0, 0.5), _videos(rng, 20, 4, 1.0, 0.5)
    assert bootstrap_auc({"A": a}, seed=3) == bootstrap_auc({"A": a}, seed=3)
    assert bootstrap_auc({"A": a}, seed=3) != bootstrap_auc({"A": a}, seed=4)
    # two datasets averaged: narrower than either alone (independent resamples partly cancel)
    both = bootstrap_auc({"A": a, "B": b})
    assert both.half_width < min(bootstrap_auc({"A": a}).half_width, bootstrap_auc({"B": b}).half_width)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    frames = _videos(np.random.default_rng(5), 20, 4, 1.0, 0.5)
    diff = paired_auc_difference({"A": frames}, {"A": frames}, level="video")
    assert diff == Interval(0.0, 0.0, 0.0, 0.95)
    assert verdict(diff) == "within noise"


def test_paired_difference_detects_a_small_gain_that_unpaired_intervals_cannot():
    rng = np.random.default_rng(6)
    base = _videos(rng, 60, 4, 1.0, 0.7)
    # a better model: the same scores plus a little more separation (shared video effects, as two detectors have)
    better = ScoredFrames(base.labels, base.scores + 0.15 * base.labels + rng.normal(0, 0.05, len(base.labels)),
                          base.video_ids)  # fmt: skip
    diff = paired_auc_difference({"A": better}, {"A": base})
    expected = roc_auc_score(better.labels, better.scores) - roc_auc_score(base.labels, base.scores)
    assert diff.estimate == pytest.approx(expected, abs=1e-12)
    assert verdict(diff) == "helped"
    assert verdict(paired_auc_difference({"A": base}, {"A": better})) == "hurt"
    # unpaired, the two intervals overlap: the difference is within the noise of either model's AUC
    ci_better, ci_base = bootstrap_auc({"A": better}), bootstrap_auc({"A": base})
    assert ci_better.low < ci_base.high
    assert verdict(Interval(0.01, -0.02, 0.03, 0.95)) == "within noise"


def test_conditions_of_one_dataset_share_its_video_draws():
    rng = np.random.default_rng(8)
    base = _videos(rng, 30, 4, 1.0, 0.6)
    better = ScoredFrames(base.labels, base.scores + 0.2 * base.labels, base.video_ids)
    one = paired_auc_difference({"A": better}, {"A": base}, seed=2)
    two_a = {"A|clean": better, "A|blur:3": better}
    two_b = {"A|clean": base, "A|blur:3": base}
    shared = paired_auc_difference(two_a, two_b, seed=2, resample_as={"A|clean": "A", "A|blur:3": "A"})
    # the same frames twice, drawn as one sample of videos: exactly the one-dataset interval
    assert shared == one
    # drawn independently, the two copies would pretend to be two samples and narrow the interval
    independent = paired_auc_difference(two_a, two_b, seed=2)
    assert independent.half_width < shared.half_width


def test_paired_difference_refuses_different_frames():
    frames = _videos(np.random.default_rng(7), 10, 3, 1.0, 0.5)
    order = np.random.default_rng(0).permutation(len(frames.labels))
    shuffled = ScoredFrames(frames.labels[order], frames.scores[order], frames.video_ids[order])
    with pytest.raises(ValueError, match="dataset 'CDF'.*same frames in the same order"):
        paired_auc_difference({"CDF": frames}, {"CDF": shuffled})
    fewer = ScoredFrames(frames.labels[:-3], frames.scores[:-3], frames.video_ids[:-3])
    with pytest.raises(ValueError, match="dataset 'CDF'"):
        paired_auc_difference({"CDF": frames}, {"CDF": fewer})
    with pytest.raises(ValueError, match=r"only in a \['DFDC'\]"):
        paired_auc_difference({"CDF": frames, "DFDC": frames}, {"CDF": frames})


def test_bad_input_names_the_dataset():
    ok = _videos(np.random.default_rng(8), 5, 2, 1.0, 0.5)
    one_class = ScoredFrames(np.zeros(4, int), np.arange(4.0), np.array(["a", "a", "b", "b"]))
    with pytest.raises(ValueError, match="dataset 'UADFV': AUC needs real and fake videos, all 2 videos are real"):
        bootstrap_auc({"UADFV": one_class})
    mixed = ScoredFrames(np.array([0, 1, 0, 1]), np.arange(4.0), np.array(["a", "a", "b", "c"]))
    with pytest.raises(ValueError, match="dataset 'X': video 'a' has both real and fake frames"):
        bootstrap_auc({"X": mixed})
    nan = ScoredFrames(ok.labels, np.where(np.arange(len(ok.labels)) == 0, np.nan, ok.scores), ok.video_ids)
    with pytest.raises(ValueError, match="dataset 'X': 1 scores are NaN"):
        bootstrap_auc({"X": nan})
    with pytest.raises(ValueError, match="dataset 'X': labels, scores and video_ids must be 1-D of one length"):
        bootstrap_auc({"X": ScoredFrames(ok.labels, ok.scores[:-1], ok.video_ids)})
    with pytest.raises(ValueError, match="labels must be 0 \\(real\\) or 1 \\(fake\\), got \\[0, 2\\]"):
        bootstrap_auc({"X": ScoredFrames(ok.labels * 2, ok.scores, ok.video_ids)})
    with pytest.raises(ValueError, match="level must be 'frame' or 'video'"):
        bootstrap_auc({"X": ok}, level="clip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence must lie in"):
        bootstrap_auc({"X": ok}, confidence=95)
    with pytest.raises(ValueError, match="no datasets"):
        bootstrap_auc({})


def test_demo_test_sets_pin_even_a_chance_detectors_held_out_mean_to_two_hundredths():
    """The demo's promise (docs/data.md): every model's held-out mean AUC is known to +-0.02 at 95 %. A chance-level
    detector whose frames all agree within a video has the widest interval, so bootstrap one on the small preset's
    held-out test sets (videos per class by the generator's own split rule) as the study does."""
    from mergekit_clip.data.synthetic import HELDOUT_SPLIT, PRESETS, STYLES, _splits

    n_videos, n_frames = PRESETS["small"].heldout
    per_class = _splits(n_videos, np.random.default_rng(0), HELDOUT_SPLIT).count("test")
    held_out = [s.name for s in STYLES if not s.source]
    rng = np.random.default_rng(7)
    widths = []
    for sim in range(3):
        sets = {}
        for name in held_out:
            video_scores = rng.random(2 * per_class)  # independent of the label: AUC 0.5
            frames = _videos(rng, per_class, n_frames, 0.0, 0.0)
            video = np.repeat(np.arange(2 * per_class), n_frames)
            sets[name] = ScoredFrames(frames.labels, video_scores[video], frames.video_ids)
        ci = bootstrap_auc(sets, level="frame", n_boot=400, seed=sim)
        assert abs(ci.estimate - 0.5) < 0.03
        widths.append((ci.high - ci.low) / 2)
    assert len(held_out) == 4 and np.mean(widths) <= 0.02, (per_class, widths)


def test_draws_are_made_once_per_dataset_and_reused_read_only():
    """Every model of a dataset is resampled with the same draws (the pairing); they are drawn once per process,
    and the interval is the same whether they came from the cache or were drawn afresh."""
    from eval import bootstrap

    rng = np.random.default_rng(6)
    a, b = _videos(rng, 25, 3, 1.0, 0.5), _videos(rng, 25, 3, 0.8, 0.5)
    b = ScoredFrames(a.labels, b.scores, a.video_ids)  # the same frames, another model's scores
    bootstrap._draw_counts.cache_clear()
    diff = paired_auc_difference({"x": a}, {"x": b}, n_boot=200, seed=3)
    assert bootstrap._draw_counts.cache_info()[:2] == (1, 1)  # (hits, misses): b reused a's draws
    counts = bootstrap._draw_counts(3, "x", 200, 25, 50)
    with pytest.raises(ValueError, match="read-only"):
        counts[0, 0] = 7
    bootstrap._draw_counts.cache_clear()
    assert paired_auc_difference({"x": a}, {"x": b}, n_boot=200, seed=3) == diff
