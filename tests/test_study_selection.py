"""Selection on source val: the primary metric decides, the tie-break orders models tied on it (saturated val)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mergekit_clip.metrics import binary_log_loss_error
from study.scores import SplitScores
from study.selection import INGREDIENTS, Entry, select_on_val


def _scores(fake: float, real: float, n: int = 4) -> dict[str, SplitScores]:
    """n real and n fake frames, one per video, at constant scores: AUC 1.0 whenever fake > real."""
    labels = np.array([0] * n + [1] * n)
    scores = np.array([real] * n + [fake] * n)
    return {"Src": SplitScores(labels, scores, np.array([f"v{i}" for i in range(2 * n)]))}


def _entry(name: str) -> Entry:
    return Entry(name, "ingredient", INGREDIENTS, Path(name), name)


def test_tie_on_saturated_auc_goes_to_the_lower_val_log_loss():
    val = {"timid": _scores(0.6, 0.4), "sure": _scores(0.99, 0.01)}
    entries = [_entry("timid"), _entry("sure")]
    picked = select_on_val(val, entries, "video_auc", "log_loss")
    assert picked.val_scores == {"timid": 1.0, "sure": 1.0}
    assert picked.reference == "sure"
    expected = binary_log_loss_error(val["sure"]["Src"].labels, val["sure"]["Src"].scores)
    assert picked.tie_scores["sure"] == pytest.approx(-expected)  # stored signed: higher is better
    # without a tie-break the first listed wins (study order)
    assert select_on_val(val, entries, "video_auc").reference == "timid"


def test_tie_break_never_overrides_the_selection_metric():
    worse_auc = _scores(0.99, 0.01)
    worse_auc["Src"] = SplitScores(worse_auc["Src"].labels, np.array([0.01, 0.01, 0.01, 0.995, 0.99, 0.99, 0.99,
                                                                      0.99]), worse_auc["Src"].video_ids)  # fmt: skip
    val = {"confident_but_wrong_once": worse_auc, "timid": _scores(0.6, 0.4)}
    picked = select_on_val(val, [_entry("confident_but_wrong_once"), _entry("timid")], "frame_auc", "log_loss")
    assert picked.val_scores["confident_but_wrong_once"] < 1.0
    assert picked.reference == "timid"


def test_higher_is_better_tie_break_keeps_its_sign():
    val = {"a": _scores(0.6, 0.4), "b": _scores(0.99, 0.01)}
    picked = select_on_val(val, [_entry("a"), _entry("b")], "frame_auc", "tpr_at_fpr_1pct")
    # both reach TPR 1.0 at FPR 0: still tied, so study order decides
    assert picked.tie_scores == {"a": 1.0, "b": 1.0}
    assert picked.reference == "a"
