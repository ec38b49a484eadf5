"""Study figures: each function writes a readable PNG and refuses bad rows with an error naming the row."""

from __future__ import annotations

import matplotlib.image as mpimg
import pytest

from study.figures import plot_did_merging_help, plot_param_sweep, plot_val_vs_test, val_pick

ROWS = [
    {"name": "ft_lr1e-3_s0", "kind": "ingredient", "estimate": 0.71, "low": 0.69, "high": 0.73},
    {"name": "ft_lr3e-4_s1", "kind": "ingredient", "estimate": 0.74, "low": 0.72, "high": 0.76},
    {"name": "greedy", "kind": "soup", "estimate": 0.75, "low": 0.73, "high": 0.77},
    {"name": "ties_d0.2_l1", "kind": "merge", "estimate": 0.78, "low": 0.76, "high": 0.80},
    {"name": "linear", "kind": "merge", "estimate": 0.73, "low": 0.71, "high": 0.75},
]
CANDIDATES = [
    {"method": "ties", "name": f"ties_d{d}_l{lam}", "params": {"density": d, "lambda": lam}, "val": v, "test": t}
    for d, lam, v, t in [(0.1, 1.0, 0.80, 0.74), (0.2, 1.0, 0.83, 0.77), (0.5, 1.0, 0.81, 0.76),
                         (0.1, 1.5, 0.79, 0.73), (0.2, 1.5, 0.82, 0.78), (0.5, 1.5, 0.84, 0.75)]
] + [{"method": "linear", "name": "linear", "params": {}, "val": 0.78, "test": 0.73}]  # fmt: skip


def _is_png(path) -> bool:
    image = mpimg.imread(path)
    return path.stat().st_size > 5000 and image.shape[0] > 200 and image.shape[1] > 300


def test_the_ring_of_val_vs_test_follows_the_study_pick_on_a_saturated_val():
    """Val AUC ties at 1.0 in-domain; the study breaks ties by val log loss, so the ring must not be the first 1.0."""
    tied = [{**c, "val": 1.0} for c in CANDIDATES if c["method"] == "ties"]
    assert val_pick(tied) is tied[0]  # no flag: the first of the best val scores
    flagged = [{**c, "selected": c["name"] == "ties_d0.5_l1.5"} for c in tied]
    assert val_pick(flagged)["name"] == "ties_d0.5_l1.5"


def test_did_merging_help_writes_a_figure(tmp_path):
    out = plot_did_merging_help(ROWS, "ft_lr3e-4_s1", tmp_path / "sub" / "help.png")
    assert out == tmp_path / "sub" / "help.png" and _is_png(out)


def test_val_vs_test_and_param_sweep_write_figures(tmp_path):
    assert _is_png(plot_val_vs_test(CANDIDATES, tmp_path / "val_test.png"))
    assert _is_png(plot_param_sweep(CANDIDATES, "ties", "density", tmp_path / "ties_density.png"))
    one_param = [c for c in CANDIDATES if c["method"] == "ties" and c["params"]["lambda"] == 1.0]
    assert _is_png(plot_param_sweep(one_param, "ties", "density", tmp_path / "one.png"))


@pytest.mark.parametrize(
    ("rows", "reference", "message"),
    [
        ([], "x", "no rows to plot"),
        ([{**ROWS[0], "kind": "ensemble"}], "ft_lr1e-3_s0", r"kind 'ensemble'; choose from \['ingredient', 'soup'"),
        ([{k: v for k, v in ROWS[0].items() if k != "low"}], "ft_lr1e-3_s0", r"row 0 \('ft_lr1e-3_s0'\) lacks"),
        ([{**ROWS[0], "low": 0.72}], "ft_lr1e-3_s0", r"estimate 0.71 outside its interval \[0.72, 0.73\]"),
        ([{**ROWS[0], "estimate": float("nan")}], "ft_lr1e-3_s0", "estimate=nan, expected a finite number"),
        ([ROWS[0], ROWS[0]], "ft_lr1e-3_s0", r"repeated: \['ft_lr1e-3_s0'\]"),
        (ROWS, "ft_best", "reference 'ft_best' is not a row"),
    ],
)
def test_did_merging_help_refuses_bad_rows(rows, reference, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        plot_did_merging_help(rows, reference, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_candidate_plots_refuse_bad_rows(tmp_path):
    with pytest.raises(ValueError, match=r"val-vs-test plot: row 0 \('t'\) lacks \['test'\]"):
        plot_val_vs_test([{"method": "ties", "name": "t", "val": 0.8}], tmp_path / "a.png")
    with pytest.raises(ValueError, match="candidate 't' has val='high'"):
        plot_val_vs_test([{"method": "ties", "name": "t", "val": "high", "test": 0.7}], tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"no candidate of method 'dare'; methods: \['linear', 'ties'\]"):
        plot_param_sweep(CANDIDATES, "dare", "density", tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"has no parameter 'weight'; it has \['density', 'lambda'\]"):
        plot_param_sweep(CANDIDATES, "ties", "weight", tmp_path / "b.png")
    assert not list(tmp_path.iterdir())
