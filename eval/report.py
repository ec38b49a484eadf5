"""Cross-dataset report: JSON (every number + provenance), CSV, markdown tables, ROC, histogram, reliability PNGs.

Everything is computed from per-frame predictions (``predictions/<model>__<dataset>[__<perturbation>].jsonl``),
which the report keeps, so ``clip-eval report PRED...`` rebuilds an identical report without running any model.
Frames that failed to decode are counted and excluded from the metrics. The folder is written atomically.

Metrics come from the registry (``mergekit_clip.metrics.METRICS``): every registered metric is a column of
``metrics.csv`` and ``report.json``. Clean predictions make the cross-dataset tables; perturbed ones (their
``meta["perturbation"]``) make the robustness section (``eval.robustness``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.predict import Predictions
from eval.provenance import slug
from mergekit_clip.detector.io import atomic_directory
from mergekit_clip.metrics import (
    ECE_BINS,
    METRICS,
    VideoAggregate,
    VideoIdMode,
    calibration_bins,
    compute_metrics,
    lower_is_better,
    metric_names,
    video_key,
)

REPORT_VERSION = 2
KIND_ORDER = ("ingredient", "soup", "merge", "other")
PRED_DIR = "predictions"


class ReportError(ValueError):
    """Predictions that cannot form a report (the message names the file)."""


# ---------------------------------------------------------------- predictions on disk


def save_predictions(pred: Predictions, directory: Path) -> Path:
    """One JSONL file: a header line (model, dataset, meta), then one line per frame."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = f"__{slug(pred.perturbation)}" if pred.perturbation else ""
    file = directory / f"{slug(pred.model)}__{slug(pred.dataset)}{suffix}.jsonl"
    groups = pred.groups or [None] * len(pred.paths)
    with open(file, "w") as f:
        header = {"model": pred.model, "dataset": pred.dataset, "meta": pred.meta, "format": REPORT_VERSION}
        f.write(json.dumps(header) + "\n")
        rows = zip(pred.paths, pred.labels, pred.video_ids, pred.scores, pred.ok, groups)
        for path, label, vid, score, ok, group in rows:
            row = {"path": path, "label": int(label), "video_id": vid, "score": float(score) if ok else None}
            if group is not None:
                row["group"] = group
            f.write(json.dumps(row) + "\n")
    return file


def load_predictions(file: str | os.PathLike) -> Predictions:
    file = Path(file)
    try:
        lines = file.read_text().splitlines()
        header = json.loads(lines[0])
        rows = [json.loads(line) for line in lines[1:] if line.strip()]
        paths = [r["path"] for r in rows]
        labels = np.asarray([r["label"] for r in rows], dtype=np.int64)
        ok = np.asarray([r["score"] is not None for r in rows], dtype=bool)
        scores = np.asarray([np.nan if r["score"] is None else r["score"] for r in rows], dtype=np.float64)
        return Predictions(
            model=header["model"],
            dataset=header["dataset"],
            paths=paths,
            labels=labels,
            video_ids=[r.get("video_id", "") for r in rows],
            scores=scores,
            ok=ok,
            meta=header.get("meta", {}),
            groups=[str(r["group"]) for r in rows] if rows and all("group" in r for r in rows) else [],
        )
    except (OSError, IndexError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ReportError(f"{file}: not a clip-eval predictions file ({type(e).__name__}: {e})") from e


def collect_prediction_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files given directly, or every ``*.jsonl`` in a given folder or its ``predictions/`` sub-folder."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            folder = item / PRED_DIR if (item / PRED_DIR).is_dir() else item
            found = sorted(folder.glob("*.jsonl"))
            if not found:
                raise ReportError(f"{item}: no *.jsonl predictions in it")
            files.extend(found)
        else:
            files.append(item)
    return files


# ---------------------------------------------------------------- numbers


def _clean(value: Any) -> Any:
    """JSON has no NaN: undefined metrics are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_predictions(
    pred: Predictions, video_id: VideoIdMode = "full", aggregate: VideoAggregate = "mean"
) -> dict[str, Any]:
    """Every registered metric of one prediction set (failed frames excluded), plus counts and warnings.

    ``acc_val_threshold`` uses ``meta["val_threshold"]`` (chosen on source val by ``clip-eval --threshold-val``);
    ``group_auc`` is present when the predictions carry label groups.
    """
    ok = pred.ok
    videos = [video_key(p, video_id) for p, keep in zip(pred.paths, ok) if keep]
    groups = [g for g, keep in zip(pred.groups, ok) if keep] if pred.groups else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = compute_metrics(
            pred.labels[ok],
            pred.scores[ok],
            videos,
            aggregate=aggregate,
            val_threshold=pred.meta.get("val_threshold"),
            groups=groups,
        )
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    for note in notes:
        warnings.warn(f"{pred.model} on {pred.dataset}: {note}", stacklevel=2)
    if "group_auc" in metrics:
        metrics["group_auc"] = {k: _clean(v) for k, v in metrics["group_auc"].items()}
    return {**metrics, "frames_failed": pred.failed, "warnings": notes}


def model_kind(meta: dict[str, Any]) -> str:
    selection = str(meta.get("selection", ""))
    for kind in ("soup", "merge", "ingredient"):
        if kind in selection:
            return kind
    return "other"


def build_results(
    preds: Sequence[Predictions], video_id: VideoIdMode = "full", aggregate: VideoAggregate = "mean"
) -> dict[str, Any]:
    """The report as a JSON-able dict: per model x dataset metrics, per-model means, provenance, robustness."""
    seen: set[tuple[str, str, str | None]] = set()
    for p in preds:
        key = (p.model, p.dataset, p.perturbation)
        if key in seen:
            extra = f" under {p.perturbation}" if p.perturbation else ""
            raise ReportError(f"two prediction sets for model {p.model!r} on dataset {p.dataset!r}{extra}")
        seen.add(key)
    clean = [p for p in preds if p.perturbation is None]
    perturbed = [p for p in preds if p.perturbation is not None]
    models = list(dict.fromkeys(p.model for p in preds))
    datasets = list(dict.fromkeys(p.dataset for p in clean))
    results, provenance = [], {}
    for p in preds:
        provenance.setdefault(p.model, {k: v for k, v in p.meta.items() if k in _MODEL_KEYS})
    for p in clean:
        meta = dict(p.meta)
        results.append(
            {
                "model": p.model,
                "dataset": p.dataset,
                **{k: _clean(v) for k, v in score_predictions(p, video_id, aggregate).items()},
                **{k: v for k, v in meta.items() if k not in _MODEL_KEYS},
            }
        )
    for prov in provenance.values():
        prov["kind"] = model_kind(prov)
    means = {}
    for model in models:
        rows = [r for r in results if r["model"] == model]
        means[model] = {}
        for metric in metric_names():
            values = [r[metric] for r in rows if r.get(metric) is not None]
            means[model][metric] = float(np.mean(values)) if values else None
            means[model][f"{metric}_datasets"] = len(values)
    order = sorted(models, key=lambda m: (KIND_ORDER.index(provenance[m]["kind"]), models.index(m)))
    pooling = "frame directory" if video_id == "full" else "folder name (DeepfakeBench; fake only if every frame is)"
    notes = {name: metric.description for name, metric in METRICS.items()}
    notes["video_auc"] = f"AUC of the {aggregate} P(fake) per video; video = {video_id} {pooling}"
    notes["mean"] = "mean over the datasets where the metric is defined"
    report = {
        "format": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "video_id": video_id,
        "video_aggregate": aggregate,
        "metric_notes": notes,
        "models": {m: provenance[m] for m in order},
        "datasets": datasets,
        "results": results,
        "means": {m: means[m] for m in order},
    }
    if perturbed:
        from eval.robustness import build_robustness

        report["robustness"] = build_robustness(perturbed, results, order, video_id, aggregate)
    return report


_MODEL_KEYS = ("model_dir", "weights_hash", "selection", "device", "dtype", "layout", "world_size")


# ---------------------------------------------------------------- writers


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _bold_best(column: list[float | None], lower: bool) -> list[str]:
    defined = [v for v in column if v is not None]
    best = (min(defined) if lower else max(defined)) if defined else None
    return [f"**{_fmt(v)}**" if v is not None and v == best else _fmt(v) for v in column]


def metric_table(report: dict[str, Any], metric: str, with_video_mean: bool = False) -> str:
    """Markdown: rows = models (kind order), columns = datasets + mean; best per column in bold."""
    models, datasets = list(report["models"]), report["datasets"]
    cell = {(r["model"], r["dataset"]): r[metric] for r in report["results"]}
    columns = [[cell.get((m, d)) for m in models] for d in datasets]
    columns.append([report["means"][m][metric] for m in models])
    header = ["kind", "model", *datasets, "mean"]
    if with_video_mean:
        columns.append([report["means"][m]["video_auc"] for m in models])
        header.append("mean video AUC")
    lower = metric in lower_is_better()
    rendered = [_bold_best(col, lower) for col in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, m in enumerate(models):
        lines.append("| " + " | ".join([report["models"][m]["kind"], f"`{m}`", *[c[i] for c in rendered]]) + " |")
    return "\n".join(lines)


def means_table(report: dict[str, Any]) -> str:
    """Markdown: rows = models, columns = every registered metric's mean over datasets (best in bold)."""
    models, names = list(report["models"]), metric_names()
    lower = lower_is_better()
    columns = [_bold_best([report["means"][m][n] for m in models], n in lower) for n in names]
    header = ["model", *[f"{n} {'↓' if n in lower else '↑'}" for n in names]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, m in enumerate(models):
        lines.append("| " + " | ".join([f"`{m}`", *[c[i] for c in columns]]) + " |")
    return "\n".join(lines)


def group_table(report: dict[str, Any]) -> str | None:
    """Markdown: per-label-group AUC (each fake group against the dataset's reals), where there are >= 2 groups."""
    rows = [r for r in report["results"] if len(r.get("group_auc") or {}) >= 2]
    if not rows:
        return None
    lines = ["| model | dataset | group | AUC |", "|---|---|---|---|"]
    for r in rows:
        for group, value in r["group_auc"].items():
            lines.append(f"| `{r['model']}` | {r['dataset']} | {group} | {_fmt(value)} |")
    return "\n".join(lines)


_TITLES = {
    "video_auc": "Video AUC",
    "eer": "EER (lower is better)",
    "ap": "AP",
    "acc": "ACC @ 0.5",
    "acc_val_threshold": "ACC @ threshold chosen on source val",
    "tpr_at_fpr_5pct": "TPR @ FPR 5 %",
    "ece": "ECE (lower is better)",
}


def write_markdown(report: dict[str, Any], file: Path) -> None:
    parts = [
        "# clip-eval report",
        "",
        f"Video id: `{report['video_id']}`; video score = {report.get('video_aggregate', 'mean')} P(fake). "
        f"EER: {report['metric_notes']['eer']}. Means are over the datasets where a metric is defined.",
    ]
    if report["results"]:
        parts += ["", "## Frame AUC", "", metric_table(report, "frame_auc", with_video_mean=True)]
        has_threshold = any(r.get("acc_val_threshold") is not None for r in report["results"])
        for metric, title in _TITLES.items():
            if metric == "acc_val_threshold" and not has_threshold:
                continue
            parts += ["", f"## {title}", "", metric_table(report, metric)]
        parts += ["", "## Every metric (mean over datasets)", "", means_table(report)]
        groups = group_table(report)
        if groups:
            parts += ["", "## AUC per label group (fakes of each group against the shared reals)", "", groups]
    if "robustness" in report:
        from eval.robustness import robustness_markdown

        parts += ["", robustness_markdown(report["robustness"])]
    parts += ["", "## Models", "", "| model | kind | selection | weights sha256 |", "|---|---|---|---|"]
    for m, prov in report["models"].items():
        sha = str(prov.get("weights_hash", ""))[:12]
        parts.append(f"| `{m}` | {prov['kind']} | {prov.get('selection', '')} | `{sha}` |")
    parts += ["", "## Frames", "", "| model | dataset | frames used | failed | videos |", "|---|---|---|---|---|"]
    for r in report["results"]:
        parts.append(f"| `{r['model']}` | {r['dataset']} | {r['frames']} | {r['frames_failed']} | {r['videos']} |")
    file.write_text("\n".join(parts) + "\n")


def write_csv(report: dict[str, Any], file: Path) -> None:
    """``metrics.csv``: one row per model x dataset (+ a ``mean`` row per model), one column per metric."""
    names = metric_names()
    fields = ["model", "kind", "dataset", *names, "frames", "frames_failed", "videos"]
    with open(file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in report["results"]:
            row = {k: r.get(k) for k in fields}
            row["kind"] = report["models"][r["model"]]["kind"]
            writer.writerow(row)
        for m, means in report["means"].items():
            kind = report["models"][m]["kind"]
            writer.writerow({"model": m, "kind": kind, "dataset": "mean", **{k: means[k] for k in names}})


def write_group_csv(report: dict[str, Any], file: Path) -> bool:
    """``group_auc.csv`` (model, dataset, group, auc) when any result has label groups; False when none has."""
    rows = [(r, g, v) for r in report["results"] for g, v in (r.get("group_auc") or {}).items()]
    if not rows:
        return False
    with open(file, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "dataset", "group", "auc"])
        for r, group, value in rows:
            writer.writerow([r["model"], r["dataset"], group, value])
    return True


PLOT_KINDS = ("roc", "hist", "reliability")


def write_plots(preds: Sequence[Predictions], directory: Path, kinds: Sequence[str] = PLOT_KINDS) -> list[str]:
    """Per dataset: ``roc_<dataset>.png`` (every model), ``hist_<dataset>.png`` (real vs fake scores, one panel a
    model) and ``reliability_<dataset>.png``, those of ``kinds`` (a study shows only its ROC curves)."""
    import matplotlib

    matplotlib.use("Agg")
    unknown = sorted(set(kinds) - set(PLOT_KINDS))
    if unknown:
        raise ValueError(f"unknown plot kinds {unknown}; choices: {list(PLOT_KINDS)}")
    writers = {"roc": write_roc, "hist": write_hist, "reliability": write_reliability}
    written = []
    preds = [p for p in preds if p.perturbation is None]
    for dataset in dict.fromkeys(p.dataset for p in preds):
        group = [p for p in preds if p.dataset == dataset]
        written += [writers[kind](group, dataset, directory) for kind in PLOT_KINDS if kind in kinds]
    return written


def write_roc(group: Sequence[Predictions], dataset: str, directory: Path) -> str:
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    colours = plt.get_cmap("tab20").colors
    for i, p in enumerate(group):
        y, s = p.labels[p.ok], p.scores[p.ok]
        if np.unique(y).size == 2:
            fpr, tpr, _ = roc_curve(y, s)
            # Many models share one plot: the line style tells ingredients, soups and merges apart.
            style = _ROC_STYLE.get(model_kind(p.meta), _ROC_STYLE["other"])
            label = f"{p.model} (AUC {np.trapezoid(tpr, fpr):.3f})"
            ax.plot(fpr, tpr, label=label, color=colours[i % len(colours)], **style)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {dataset}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    name = f"roc_{slug(dataset)}.png"
    fig.savefig(directory / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return name


def write_hist(group: Sequence[Predictions], dataset: str, directory: Path) -> str:
    import matplotlib.pyplot as plt

    cols = min(3, len(group))
    rows = math.ceil(len(group) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, p in zip(axes.flat, group):
        y, s = p.labels[p.ok], p.scores[p.ok]
        ax.hist(s[y == 0], bins=bins, alpha=0.6, label="real")
        ax.hist(s[y == 1], bins=bins, alpha=0.6, label="fake")
        ax.set(title=p.model, xlabel="P(fake)")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(group) :]:
        ax.axis("off")
    name = f"hist_{slug(dataset)}.png"
    fig.tight_layout()
    fig.savefig(directory / name, dpi=100)
    plt.close(fig)
    return name


def write_reliability(group: Sequence[Predictions], dataset: str, directory: Path, n_bins: int = ECE_BINS) -> str:
    """``reliability_<dataset>.png``: fraction fake against mean P(fake) per equal-width bin, models overlaid."""
    import matplotlib.pyplot as plt

    from mergekit_clip.metrics import binary_ece_error

    fig, ax = plt.subplots(figsize=(5, 5))
    colours = plt.get_cmap("tab20").colors
    for i, p in enumerate(group):
        y, s = p.labels[p.ok], p.scores[p.ok]
        if not y.size:
            continue
        count, mean_score, frac_fake = calibration_bins(y, s, n_bins)
        used = count > 0
        label = f"{p.model} (ECE {binary_ece_error(y, s, n_bins):.3f})"
        ax.plot(mean_score[used], frac_fake[used], marker="o", ms=3, color=colours[i % len(colours)], label=label)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="mean P(fake) in bin", ylabel="fraction fake in bin", title=f"reliability: {dataset}")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    name = f"reliability_{slug(dataset)}.png"
    fig.savefig(directory / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return name


_ROC_STYLE = {
    "ingredient": {"lw": 0.9, "ls": "--", "alpha": 0.8},
    "soup": {"lw": 1.8, "ls": "-."},
    "merge": {"lw": 1.6, "ls": "-"},
    "other": {"lw": 1.2, "ls": "-"},
}


def write_report(
    preds: Sequence[Predictions],
    out: str | os.PathLike,
    video_id: VideoIdMode = "full",
    overwrite: bool = False,
    aggregate: VideoAggregate = "mean",
    boundaries: Sequence = (),
) -> dict[str, Any]:
    """Write the whole report folder atomically; returns the JSON report.

    ``boundaries``: :class:`eval.boundary.BoundaryPanel` s of detectors that predict blending boundaries, drawn as
    ``boundary_<model>.png`` (one row per dataset).
    """
    if not preds:
        raise ReportError("no predictions to report")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"report folder {out} already exists (pass --overwrite to replace it)")
    report = build_results(preds, video_id, aggregate)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for p in preds:
            save_predictions(p, tmp / PRED_DIR)
        report["plots"] = write_plots(preds, tmp)
        if "robustness" in report:
            from eval.robustness import write_robustness

            report["plots"] += write_robustness(report["robustness"], tmp)
        if boundaries:
            from eval.boundary import write_boundary_figures

            report["plots"] += write_boundary_figures(boundaries, tmp)
        write_group_csv(report, tmp / "group_auc.csv")
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        write_csv(report, tmp / "metrics.csv")
        write_markdown(report, tmp / "report.md")
    return report
