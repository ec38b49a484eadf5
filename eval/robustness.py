"""Robustness to unseen perturbations: AUC against severity, the mean over levels, the drop from clean.

A perturbed prediction set is an ordinary :class:`eval.predict.Predictions` whose ``meta["perturbation"]`` is a
perturbation key (``"gaussian_blur:9"``, see ``mergekit_clip.data.perturbations``). For every model x dataset x
perturbation type this module reports frame and video AUC at each level, their mean over the levels scored, and
the drop = clean AUC - mean (positive = the perturbation hurts). The library entry point is
:func:`evaluate_robustness`; ``clip-eval score --perturb SUITE|NAME:LEVEL`` calls the same code.

    from eval.robustness import evaluate_robustness
    result = evaluate_robustness({"merge": "merged/ties", "best": "ingredients/a"}, {"Celeb-DF-v2": records},
                                 "deeperforensics", out="reports/robust")
    result["means"]["merge"]["frame_auc"]  # mean frame AUC over every perturbation and level
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.predict import Predictions, Predictor, Record
from mergekit_clip.data.perturbations import PERTURBATIONS, Perturbation, expand_perturbations, parse_perturbation
from mergekit_clip.metrics import VideoAggregate, VideoIdMode, compute_metrics, video_key

ROBUST_METRICS = ("frame_auc", "video_auc")


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _drop(clean: float | None, mean: float | None) -> float | None:
    return None if clean is None or mean is None else clean - mean


def score_perturbed(pred: Predictions, video_id: VideoIdMode = "full", aggregate: VideoAggregate = "mean") -> dict:
    """Frame and video AUC of one perturbed prediction set (failed frames excluded)."""
    ok = pred.ok
    videos = [video_key(p, video_id) for p, keep in zip(pred.paths, ok) if keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-class data: nan, reported as n/a
        metrics = compute_metrics(pred.labels[ok], pred.scores[ok], videos, aggregate=aggregate, names=ROBUST_METRICS)
    return {name: _clean(metrics[name]) for name in ROBUST_METRICS} | {"frames_failed": pred.failed}


def build_robustness(
    perturbed: Sequence[Predictions],
    clean_results: Sequence[Mapping[str, Any]],
    models: Sequence[str] | None = None,
    video_id: VideoIdMode = "full",
    aggregate: VideoAggregate = "mean",
) -> dict[str, Any]:
    """The robustness part of a report (JSON-able).

    ``rows``: one per model x dataset x perturbation (type, level, severity, AUCs); ``summary``: one per model x
    dataset x type (clean AUC, mean over levels, drop); ``means``: per model, the mean over every type, level and
    dataset, and the mean drop. ``clean_results`` are the report's clean rows (for the clean AUCs).
    """
    clean = {(r["model"], r["dataset"]): r for r in clean_results}
    rows = []
    for p in perturbed:
        spec = parse_perturbation(p.perturbation)
        rows.append(
            {
                "model": p.model,
                "dataset": p.dataset,
                "perturbation": spec.key,
                "type": spec.name,
                "level": spec.level,
                "severity": spec.severity,
                **score_perturbed(p, video_id, aggregate),
            }
        )
    models = list(models) if models is not None else list(dict.fromkeys(r["model"] for r in rows))
    models = [m for m in models if any(r["model"] == m for r in rows)]
    # canonical order (a report rebuilt from files sorted by name must come out the same): models as given, then
    # dataset, perturbation type in registry order, level from mild to severe
    type_order = list(PERTURBATIONS)
    dataset_order = list(dict.fromkeys(r["dataset"] for r in rows))
    rows.sort(
        key=lambda r: (
            models.index(r["model"]) if r["model"] in models else len(models),
            dataset_order.index(r["dataset"]),
            type_order.index(r["type"]),
            r["severity"] is None,
            r["severity"] or 0,
            r["level"],
        )
    )
    types = list(dict.fromkeys(r["type"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    summary = []
    for model in models:
        for dataset in datasets:
            for kind in types:
                group = [r for r in rows if (r["model"], r["dataset"], r["type"]) == (model, dataset, kind)]
                if not group:
                    continue
                entry: dict[str, Any] = {"model": model, "dataset": dataset, "type": kind, "levels": len(group)}
                for metric in ROBUST_METRICS:
                    base = (clean.get((model, dataset)) or {}).get(metric)
                    mean = _mean([r[metric] for r in group])
                    entry |= {f"clean_{metric}": base, f"mean_{metric}": mean, f"drop_{metric}": _drop(base, mean)}
                summary.append(entry)
    means = {}
    for model in models:
        mine = [s for s in summary if s["model"] == model]
        means[model] = {}
        for metric in ROBUST_METRICS:
            means[model][metric] = _mean([r[metric] for r in rows if r["model"] == model])
            means[model][f"drop_{metric}"] = _mean([s[f"drop_{metric}"] for s in mine])
    return {
        "metrics": list(ROBUST_METRICS),
        "types": types,
        "datasets": datasets,
        "models": models,
        "rows": rows,
        "summary": summary,
        "means": means,
        "note": "drop = clean AUC - mean AUC over the levels scored (positive = the perturbation hurts)",
    }


def _summary(robust: Mapping[str, Any], model: str, dataset: str, kind: str) -> Mapping[str, Any] | None:
    return next((s for s in robust["summary"] if (s["model"], s["dataset"], s["type"]) == (model, dataset, kind)), None)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def robustness_markdown(robust: Mapping[str, Any]) -> str:
    """Compact tables: per dataset and metric, rows = models, cells = mean AUC over levels (drop from clean)."""
    parts = ["## Robustness to perturbations", "", f"Cells: mean AUC over levels (drop from clean). {robust['note']}."]
    titles = {"frame_auc": "frame AUC", "video_auc": "video AUC"}
    for metric in robust["metrics"]:
        for dataset in robust["datasets"]:
            header = ["model", *robust["types"], "mean"]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for model in robust["models"]:
                cells = []
                for kind in robust["types"]:
                    s = _summary(robust, model, dataset, kind)
                    cells.append("" if s is None else f"{_fmt(s[f'mean_{metric}'])} ({_fmt(s[f'drop_{metric}'])})")
                mine = [x for x in robust["summary"] if (x["model"], x["dataset"]) == (model, dataset)]
                mean = _mean([x[f"mean_{metric}"] for x in mine])
                drop = _mean([x[f"drop_{metric}"] for x in mine])
                lines.append("| " + " | ".join([f"`{model}`", *cells, f"{_fmt(mean)} ({_fmt(drop)})"]) + " |")
            parts += ["", f"### {titles.get(metric, metric)}: {dataset}", "", *lines]
    return "\n".join(parts)


def write_robustness(robust: Mapping[str, Any], directory: Path) -> list[str]:
    """``robustness.csv`` and ``robustness_<metric>_<dataset>.png`` (one panel per type, models overlaid)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.report import slug

    fields = ["model", "dataset", "perturbation", "type", "level", "severity", *ROBUST_METRICS, "frames_failed"]
    with open(directory / "robustness.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in robust["rows"]:
            writer.writerow({k: row.get(k) for k in fields})
    written = []
    colours = plt.get_cmap("tab20").colors
    types = robust["types"]
    for metric in robust["metrics"]:
        for dataset in robust["datasets"]:
            cols = min(4, len(types))
            nrows = math.ceil(len(types) / cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False)
            for ax, kind in zip(axes.flat, types):
                for i, model in enumerate(robust["models"]):
                    pts = [r for r in robust["rows"] if (r["model"], r["dataset"], r["type"]) == (model, dataset, kind)]
                    pts.sort(key=lambda r: (r["severity"] is None, r["severity"] or 0, r["level"]))
                    xs = [r["severity"] if r["severity"] is not None else r["level"] for r in pts]
                    ys = [np.nan if r[metric] is None else r[metric] for r in pts]
                    s = _summary(robust, model, dataset, kind)
                    base = None if s is None else s[f"clean_{metric}"]
                    if base is not None and all(r["severity"] is not None for r in pts):
                        xs, ys = [0, *xs], [base, *ys]  # severity 0 = clean frames
                    ax.plot(xs, ys, marker="o", ms=3, color=colours[i % len(colours)], label=model)
                ax.set(title=kind, xlabel="severity (0 = clean)", ylabel=metric)
            for ax in list(axes.flat)[len(types) :]:
                ax.axis("off")
            handles, labels = axes.flat[0].get_legend_handles_labels()
            if handles:
                fig.legend(
                    handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False
                )
            fig.suptitle(f"{metric} under perturbations: {dataset}")
            fig.tight_layout()
            name = f"robustness_{metric}_{slug(dataset)}.png"
            fig.savefig(directory / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(name)
    return written


def evaluate_robustness(
    models: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    records: Mapping[str, Sequence[Record]],
    perturbations: str | Sequence[str] | Sequence[Perturbation],
    predictor: Predictor | None = None,
    *,
    seed: int = 0,
    include_clean: bool = True,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    video_id: VideoIdMode = "full",
    aggregate: VideoAggregate = "mean",
    **meta: Any,
) -> dict[str, Any]:
    """Score ``models`` (name -> detector dir, or a list of dirs) on ``records`` (dataset -> records), clean and
    under every perturbation (a suite name, ``NAME:LEVEL`` specs, or :class:`Perturbation` objects).

    Returns the report dict of :func:`eval.report.build_results` (its ``robustness`` key holds the tables, its
    ``means`` the clean metrics) with the raw ``predictions`` list added; with ``out`` the report folder is also
    written. ``seed`` seeds the perturbations (``predictor.perturb_seed`` is set to it).
    """
    from eval.provenance import model_provenance, unique_names
    from eval.report import build_results, write_report
    from mergekit_clip.detector.io import load_detector

    if isinstance(perturbations, str):
        perturbations = [perturbations]
    specs = [p if isinstance(p, Perturbation) else None for p in perturbations]
    todo = [p for p in specs if p is not None] if all(specs) else expand_perturbations([str(p) for p in perturbations])
    if not isinstance(models, Mapping):
        dirs = [str(d) for d in models]
        models = dict(zip(unique_names(dirs), dirs))
    predictor = predictor or Predictor()
    predictor.perturb_seed = int(seed)
    preds: list[Predictions] = []
    for name, model_dir in models.items():
        model = load_detector(model_dir, device=str(predictor.device))
        prov = {**model_provenance(model_dir), "device": str(predictor.device), "dtype": predictor.dtype_name, **meta}
        for dataset, recs in records.items():
            if include_clean:
                preds.append(predictor.predict(model, recs, name, dataset, **prov))
            for perturbation in todo:
                preds.append(predictor.predict(model, recs, name, dataset, perturbation, **prov))
        del model
    report = (
        write_report(preds, out, video_id, overwrite, aggregate) if out else build_results(preds, video_id, aggregate)
    )
    return {**report, "predictions": preds}
