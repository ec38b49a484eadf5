"""The demo's verdict compares soups and merges with the ingredient picked on its val split, not the oracle."""

from __future__ import annotations

import json

from study.demo_table import comparison_table


def _model_dir(tmp_path, name, val_auc):
    path = tmp_path / name
    path.mkdir()
    provenance = {"heldout": {"auc": val_auc}} if val_auc is not None else {}
    (path / "config.json").write_text(json.dumps({"provenance": provenance}))
    return str(path)


def test_verdict_uses_val_picked_ingredient(tmp_path):
    aucs = {  # model -> (kind, val AUC, AUC on A, B, in-domain T)
        "ft_a": ("ingredient", 0.90, 0.60, 0.70, 0.95),
        "ft_b": ("ingredient", 0.80, 0.80, 0.80, 0.90),  # the oracle, but worse on val
        "soup": ("soup", None, 0.70, 0.70, 0.93),
        "ties": ("merge", None, 0.64, 0.66, 0.94),
        "dare": ("merge", None, 0.50, 0.60, 0.94),
    }
    report = {"models": {}, "results": []}
    for name, (kind, val, a, b, t) in aucs.items():
        report["models"][name] = {"kind": kind, "model_dir": _model_dir(tmp_path, name, val)}
        for dataset, auc in (("A", a), ("B", b), ("T", t)):
            report["results"].append({"model": name, "dataset": dataset, "frame_auc": auc, "video_auc": auc})
    text = comparison_table(report, ["A", "B"], "T")
    assert "best single ingredient on its val split: ft_a -> held-out mean AUC 0.6500" in text
    assert "oracle: best ingredient on the test sets: ft_b -> 0.8000" in text
    assert "best soup: soup -> 0.7000 (+0.0500 vs the val-picked ingredient: helped)" in text
    assert "dare" in text.splitlines()[-6]  # every model gets a row, in report order
    assert "best merge: ties -> 0.6500 (+0.0000 vs the val-picked ingredient: no change)" in text
