"""A finished study in the experiment trackers: one TensorBoard HParams row per candidate (the HParams view is then
a sortable table of the study) and, when asked, an MLflow parent run with nested candidate runs.

Everything is read from the study.json document, so the trackers show the numbers the report shows.
"""

from __future__ import annotations

from typing import Any

from mergekit_clip.tracking import TrackingConfig


def candidate_rows(doc: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, float]]]:
    """``name -> (hyper-parameters, metrics)`` for every model of the study (ingredients, merges, soups)."""
    rows = {}
    for name, m in doc["models"].items():
        params = {"kind": m["kind"], "group": m.get("group") or "", "family": m.get("family") or "",
                  "method": m.get("method") or ""}  # fmt: skip
        params.update({f"param.{k}": v for k, v in (m.get("params") or {}).items()})
        held = m["held_out_mean"]
        metrics = {
            "val/score": m["val"]["score"],
            "held_out/frame_auc": held["frame"]["estimate"],
            "held_out/frame_auc_low": held["frame"]["low"],
            "held_out/frame_auc_high": held["frame"]["high"],
            "held_out/video_auc": held["video"]["estimate"],
            **{f"test/{d}/frame_auc": s["frame_auc"] for d, s in m["test"].items()},
            **{f"test/{d}/video_auc": s["video_auc"] for d, s in m["test"].items()},
            **{f"proxy/{p}": v for p, v in (m.get("proxies") or {}).items() if v is not None},
        }
        rows[name] = (params, {k: v for k, v in metrics.items() if v is not None})
    return rows


def log_study(study, doc: dict[str, Any]) -> None:
    """Write the study's HParams table (``OUT/tensorboard/``) and MLflow runs, as ``study.tracking`` asks."""
    config: TrackingConfig = study.tracking
    rows = candidate_rows(doc)
    if config.tensorboard:
        from mergekit_clip.tracking.tensorboard_events import write_hparams

        write_hparams(study.output / "tensorboard", rows)
    if config.mlflow:
        from mergekit_clip.tracking.mlflow_runs import log_study as log_mlflow

        out = study.output
        artifacts = [out / "report.md", out / "study.json", out / "figures"]
        params = {"name": doc["name"], "source": doc["source"], "test_datasets": doc["test_datasets"],
                  "selection_metric": doc["selection_metric"], "reference": doc["reference"]}  # fmt: skip
        ref = doc["models"][doc["reference"]]["held_out_mean"]["frame"]["estimate"]
        metrics = {"reference/held_out_frame_auc": ref}
        metrics.update({f"group/{g['group']}/selected_held_out": g["selected_held_out"] for g in doc["groups"]})
        log_mlflow(config.mlflow_tracking_uri, config.mlflow_experiment or doc["name"], doc["name"], params, metrics,
                   rows, artifacts)  # fmt: skip
