"""Cross-dataset report: JSON (every number + provenance), CSV, markdown table, ROC and histogram PNGs.

Everything is computed from per-frame predictions (``predictions/<model>__<dataset>.jsonl``), which the report
keeps, so ``clip-eval report PRED...`` rebuilds an identical report without running any model. Frames that
failed to decode are counted and excluded from the metrics. The folder is written atomically.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import METRIC_NAMES, VideoIdMode, compute_metrics, video_key
from eval.predict import Predictions
from mergekit_clip.detector.io import atomic_directory

REPORT_VERSION = 1
KIND_ORDER = ("ingredient", "soup", "merge", "other")
LOWER_IS_BETTER = {"eer"}
PRED_DIR = "predictions"


class ReportError(ValueError):
    """Predictions that cannot form a report (the message names the file)."""


def slug(name: str) -> str:
    """A file-name-safe version of a model or dataset name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "unnamed"


# ---------------------------------------------------------------- predictions on disk


def save_predictions(pred: Predictions, directory: Path) -> Path:
    """One JSONL file: a header line (model, dataset, meta), then one line per frame."""
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / f"{slug(pred.model)}__{slug(pred.dataset)}.jsonl"
    with open(file, "w") as f:
        header = {"model": pred.model, "dataset": pred.dataset, "meta": pred.meta, "format": REPORT_VERSION}
        f.write(json.dumps(header) + "\n")
        for path, label, vid, score, ok in zip(pred.paths, pred.labels, pred.video_ids, pred.scores, pred.ok):
            row = {"path": path, "label": int(label), "video_id": vid, "score": float(score) if ok else None}
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


def score_predictions(pred: Predictions, video_id: VideoIdMode = "full") -> dict[str, Any]:
    ok = pred.ok
    videos = [video_key(p, video_id) for p, keep in zip(pred.paths, ok) if keep]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = compute_metrics(pred.labels[ok], pred.scores[ok], videos)
    notes = [str(w.message) for w in caught]
    for note in notes:
        warnings.warn(f"{pred.model} on {pred.dataset}: {note}", stacklevel=2)
    return {**metrics, "frames_failed": pred.failed, "warnings": notes}


def model_kind(meta: dict[str, Any]) -> str:
    selection = str(meta.get("selection", ""))
    for kind in ("soup", "merge", "ingredient"):
        if kind in selection:
            return kind
    return "other"


def build_results(preds: Sequence[Predictions], video_id: VideoIdMode = "full") -> dict[str, Any]:
    """The report as a JSON-able dict: per model x dataset metrics, per-model means, provenance."""
    seen: dict[tuple[str, str], int] = {}
    for i, p in enumerate(preds):
        if (p.model, p.dataset) in seen:
            raise ReportError(f"two prediction sets for model {p.model!r} on dataset {p.dataset!r}")
        seen[(p.model, p.dataset)] = i
    models = list(dict.fromkeys(p.model for p in preds))
    datasets = list(dict.fromkeys(p.dataset for p in preds))
    results, provenance = [], {}
    for p in preds:
        meta = dict(p.meta)
        provenance.setdefault(p.model, {k: v for k, v in meta.items() if k in _MODEL_KEYS})
        results.append(
            {
                "model": p.model,
                "dataset": p.dataset,
                **{k: _clean(v) for k, v in score_predictions(p, video_id).items()},
                **{k: v for k, v in meta.items() if k not in _MODEL_KEYS},
            }
        )
    for prov in provenance.values():
        prov["kind"] = model_kind(prov)
    means = {}
    for model in models:
        rows = [r for r in results if r["model"] == model]
        means[model] = {}
        for metric in METRIC_NAMES:
            values = [r[metric] for r in rows if r[metric] is not None]
            means[model][metric] = float(np.mean(values)) if values else None
            means[model][f"{metric}_datasets"] = len(values)
    order = sorted(models, key=lambda m: (KIND_ORDER.index(provenance[m]["kind"]), models.index(m)))
    return {
        "format": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "video_id": video_id,
        "metric_notes": {
            "eer": "FPR at the ROC point nearest FNR = FPR (DeepfakeBench definition)",
            "acc": "accuracy with fake when P(fake) > 0.5",
            "video_auc": f"AUC of the mean P(fake) per video; video = {video_id} frame directory",
            "mean": "mean over the datasets where the metric is defined",
        },
        "models": {m: provenance[m] for m in order},
        "datasets": datasets,
        "results": results,
        "means": {m: means[m] for m in order},
    }


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
    lower = metric in LOWER_IS_BETTER
    rendered = [_bold_best(col, lower) for col in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, m in enumerate(models):
        lines.append("| " + " | ".join([report["models"][m]["kind"], f"`{m}`", *[c[i] for c in rendered]]) + " |")
    return "\n".join(lines)


def write_markdown(report: dict[str, Any], file: Path) -> None:
    titles = {
        "video_auc": "Video AUC",
        "eer": "EER (lower is better)",
        "ap": "AP",
        "acc": "ACC @ 0.5",
        "balanced_acc": "Balanced accuracy @ 0.5",
    }
    parts = [
        "# clip-eval report",
        "",
        f"Video id: `{report['video_id']}` directory. EER: {report['metric_notes']['eer']}. "
        "Means are over the datasets where a metric is defined.",
        "",
        "## Frame AUC",
        "",
        metric_table(report, "frame_auc", with_video_mean=True),
    ]
    for metric, title in titles.items():
        parts += ["", f"## {title}", "", metric_table(report, metric)]
    parts += ["", "## Models", "", "| model | kind | selection | weights sha256 |", "|---|---|---|---|"]
    for m, prov in report["models"].items():
        sha = str(prov.get("weights_hash", ""))[:12]
        parts.append(f"| `{m}` | {prov['kind']} | {prov.get('selection', '')} | `{sha}` |")
    parts += ["", "## Frames", "", "| model | dataset | frames used | failed | videos |", "|---|---|---|---|---|"]
    for r in report["results"]:
        parts.append(f"| `{r['model']}` | {r['dataset']} | {r['frames']} | {r['frames_failed']} | {r['videos']} |")
    file.write_text("\n".join(parts) + "\n")


def write_csv(report: dict[str, Any], file: Path) -> None:
    fields = ["model", "kind", "dataset", *METRIC_NAMES, "frames", "frames_failed", "videos"]
    with open(file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in report["results"]:
            row = {k: r.get(k) for k in fields}
            row["kind"] = report["models"][r["model"]]["kind"]
            writer.writerow(row)
        for m, means in report["means"].items():
            kind = report["models"][m]["kind"]
            writer.writerow({"model": m, "kind": kind, "dataset": "mean", **{k: means[k] for k in METRIC_NAMES}})


def write_plots(preds: Sequence[Predictions], directory: Path) -> list[str]:
    """``roc_<dataset>.png`` (every model) and ``hist_<dataset>.png`` (real vs fake scores, one panel a model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    written = []
    datasets = list(dict.fromkeys(p.dataset for p in preds))
    for dataset in datasets:
        group = [p for p in preds if p.dataset == dataset]
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
        written.append(name)
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
        written.append(name)
    return written


_ROC_STYLE = {
    "ingredient": {"lw": 0.9, "ls": "--", "alpha": 0.8},
    "soup": {"lw": 1.8, "ls": "-."},
    "merge": {"lw": 1.6, "ls": "-"},
    "other": {"lw": 1.2, "ls": "-"},
}


def write_report(
    preds: Sequence[Predictions], out: str | os.PathLike, video_id: VideoIdMode = "full", overwrite: bool = False
) -> dict[str, Any]:
    """Write the whole report folder atomically; returns the JSON report."""
    if not preds:
        raise ReportError("no predictions to report")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"report folder {out} already exists (pass --overwrite to replace it)")
    report = build_results(preds, video_id)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for p in preds:
            save_predictions(p, tmp / PRED_DIR)
        report["plots"] = write_plots(preds, tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        write_csv(report, tmp / "metrics.csv")
        write_markdown(report, tmp / "report.md")
    return report
