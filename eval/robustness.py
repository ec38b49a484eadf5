"""Robustness to unseen perturbations: AUC against severity, the mean over levels, the drop from clean.

A perturbed prediction set is an ordinary :class:`eval.predict.Predictions` whose ``meta["perturbation"]`` is a
perturbation key (``"gaussian_blur:9"``, see ``mergekit_clip.data.perturbations``). For every model x dataset x
perturbation type this module reports frame and video AUC at each level, their mean over the levels scored, and
the drop = clean AUC - mean (positive = the perturbation hurts). The library entry point is
:func:`evaluate_robustness`; ``clip-eval score --perturb SUITE|NAME:LEVEL`` calls the same code.

Scoring (:func:`predict_perturbed`): one pass over the frames for every perturbation of a run, in the DataLoader
workers; each frame is decoded once and each (video, CRF) H.264-encoded once, and every perturbed image equals
what ``Predictor.predict(..., perturbation)`` scores for that perturbation alone. Decoding, not perturbing, is
what a small model's clean pass spends its time on, so a suite keeps the clean images/s
(``benchmarks/robustness_throughput.py``).

    from eval.robustness import evaluate_robustness
    result = evaluate_robustness({"merge": "merged/ties", "best": "ingredients/a"}, {"Celeb-DF-v2": records},
                                 "deeperforensics", out="reports/robust")
    result["means"]["merge"]["frame_auc"]  # mean frame AUC over every perturbation and level
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from eval.predict import FrameDecodeError, Predictions, Predictor, Record, ResizeMode, _label_groups, load_frame
from mergekit_clip.data.perturbations import PERTURBATIONS, Perturbation, parse_perturbation
from mergekit_clip.data.transforms import read_image
from mergekit_clip.detector.spec import PreprocessSpec
from mergekit_clip.metrics import VideoAggregate, VideoIdMode, compute_metrics, video_key

ROBUST_METRICS = ("frame_auc", "video_auc")
Variant = Perturbation | None  # None: the clean frame


class _SuiteFrames(IterableDataset):
    """Every needed (frame, variant) of a run, each frame decoded once for all its variants.

    Items are chunks of up to ``chunk`` images: ``(images, frame indices, variant positions, ok)``. Each worker
    takes whole videos (video ``k`` of the run goes to worker ``k % workers``), so a sequence perturbation (H.264)
    encodes a video once per level and no frame is decoded in two workers. The images are exactly those of
    ``eval.predict._FrameDataset`` for each variant: same decode, same perturbation (the same encode context:
    the video's decodable frames of the whole run, in record order), same resize.
    """

    def __init__(
        self,
        paths: Sequence[str],
        todo: Mapping[int, Sequence[int]],
        variants: Sequence[Variant],
        preprocess: PreprocessSpec,
        strict: bool,
        resize: ResizeMode,
        seed: int,
        video_ids: Sequence[str],
        chunk: int,
    ):
        self.paths, self.todo, self.variants, self.preprocess = paths, dict(todo), list(variants), preprocess
        self.strict, self.resize, self.seed, self.video_ids, self.chunk = strict, resize, seed, video_ids, chunk
        self.videos: dict[str, list[int]] = {}  # video -> its frames to score, in run order
        for index in self.todo:
            self.videos.setdefault(video_ids[index], []).append(index)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = [v for k, v in enumerate(self.videos) if k % workers == worker]
        members: dict[str, list[int]] = {}
        if any(v is not None and v.kind == "video" for v in self.variants):
            wanted = set(mine)
            for j, video in enumerate(self.video_ids):
                if video in wanted:
                    members.setdefault(video, []).append(j)
        size = self.preprocess.image_size
        blank = torch.zeros(3, size, size, dtype=torch.uint8 if self.resize == "fast" else torch.float32)
        chunk: list[tuple[torch.Tensor, int, int, bool]] = []
        for video in mine:
            frames = self.videos[video]
            needed = sorted({pos for i in frames for pos in self.todo[i]})
            sequence = any(self.variants[pos] is not None and self.variants[pos].kind == "video" for pos in needed)
            decoded: dict[int, np.ndarray | None] = {}
            for j in members[video] if sequence else frames:
                try:
                    decoded[j] = read_image(self.paths[j])
                except FrameDecodeError:
                    # fails on its own (reported as not ok: strict mode raises in the main process, where the
                    # message stays one line, not a DataLoader worker's traceback); the rest of the video is encoded
                    decoded[j] = None
            context = [j for j in decoded if decoded[j] is not None]
            for pos in needed:  # one variant at a time: at most one encoded copy of the video in memory
                variant = self.variants[pos]
                encoded: dict[int, np.ndarray] = {}
                if variant is not None and variant.kind == "video":
                    encoded = dict(zip(context, variant.apply_video([decoded[j] for j in context], self.seed, video)))
                for index in frames:
                    if pos not in self.todo[index]:
                        continue
                    rgb = decoded[index]
                    if rgb is not None and variant is not None:
                        path = self.paths[index]
                        rgb = encoded[index] if variant.kind == "video" else variant.apply_frame(rgb, self.seed, path)
                    image = blank if rgb is None else load_frame(self.paths[index], self.preprocess, self.resize, rgb)
                    chunk.append((image, index, pos, rgb is not None))
                    if len(chunk) == self.chunk:
                        yield _stack(chunk)
                        chunk = []
        if chunk:
            yield _stack(chunk)


def _stack(chunk: list[tuple[torch.Tensor, int, int, bool]]) -> tuple[torch.Tensor, ...]:
    images, indices, positions, oks = zip(*chunk)
    return torch.stack(images), torch.tensor(indices), torch.tensor(positions), torch.tensor(oks)


# long: one pass decodes every frame once for all perturbations; the loader, the per-variant caches and the
# per-variant outputs live together for that pass
@torch.inference_mode()
def predict_perturbed(
    predictor: Predictor,
    model,
    records: Sequence[Record],
    model_name: str,
    dataset: str,
    perturbations: Sequence[Variant],
    **meta: Any,
) -> list[Predictions]:
    """One :class:`Predictions` per perturbation (None: clean), as ``predictor.predict(..., perturbation)`` gives
    each, in one pass: every frame is decoded once for all of them, in the data workers.

    Frames of the predictor's cache are served from it and what is computed goes into it, per variant.
    """
    variants = list(perturbations)
    keys = [predictor._variant(v) for v in variants]
    paths = [str(r.path) for r in records]
    video_ids = [str(r.video_id) for r in records]
    indices = predictor.dist.shard(len(paths))
    model, score = predictor.scorer(model)
    preprocess = model.spec.preprocess
    position = {index: i for i, index in enumerate(indices)}
    scores = np.full((len(variants), len(indices)), np.nan)
    ok = np.zeros((len(variants), len(indices)), dtype=bool)
    cache = predictor.cache

    def record(prob: np.ndarray, batch_indices: list[int], positions: list[int], oks: list[bool]) -> None:
        if predictor.strict and not all(oks):  # e.g. a frame the cache knows to be undecodable
            bad = next(paths[i] for i, good in zip(batch_indices, oks) if not good)
            what = "is missing (no such file)" if not os.path.isfile(bad) else "is not a decodable image"
            raise FrameDecodeError(f"{bad}: {what} (strict mode)")
        rows = [position[i] for i in batch_indices]
        scores[positions, rows] = np.where(oks, prob, np.nan)
        ok[positions, rows] = oks

    error = None
    try:
        todo: dict[int, list[int]] = {}
        cached: list[tuple[torch.Tensor | None, int, int]] = []
        for index in indices:
            for pos, key in enumerate(keys):
                hit, image = cache.get(paths[index], preprocess, predictor.resize, key) if cache else (False, None)
                if hit:
                    cached.append((image, index, pos))
                else:
                    todo.setdefault(index, []).append(pos)
        size = preprocess.image_size
        blank = torch.zeros(3, size, size, dtype=torch.uint8 if predictor.resize == "fast" else torch.float32)
        for start in range(0, len(cached), predictor.batch_size):
            part = cached[start : start + predictor.batch_size]
            images = torch.stack([blank if img is None else img for img, _, _ in part])
            _, batch_indices, positions = zip(*part)
            record(score(images), list(batch_indices), list(positions), [img is not None for img, _, _ in part])
        frames = _SuiteFrames(
            paths, todo, variants, preprocess, predictor.strict, predictor.resize, predictor.perturb_seed, video_ids,
            predictor.batch_size,
        )
        workers = min(predictor.num_workers, len(frames.videos))
        loader = DataLoader(
            frames,
            batch_size=None,
            num_workers=workers,
            pin_memory=predictor.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        show = predictor.progress and predictor.dist.is_main
        desc = f"{model_name} | {dataset} | {len(variants)} perturbations"
        with tqdm(total=sum(map(len, todo.values())), desc=desc, unit="image", disable=not show, leave=False) as bar:
            for images, batch_indices, positions, oks in loader:
                batch_indices, positions, oks = batch_indices.tolist(), positions.tolist(), oks.tolist()
                if cache is not None:
                    for image, index, pos, good in zip(images, batch_indices, positions, oks):
                        cache.put(paths[index], preprocess, predictor.resize, image if good else None, keys[pos])
                record(score(images), batch_indices, positions, oks)
                bar.update(len(batch_indices))
    except FrameDecodeError as e:
        if not predictor.dist.enabled:
            raise
        error = str(e)  # the other ranks wait in the gather: hand them the error instead of leaving them hanging
    out = []
    labels = np.asarray([int(r.label) for r in records], dtype=np.int64)
    for variant, row_scores, row_ok in zip(variants, scores, ok):
        if error is not None:
            row_scores, row_ok = np.full(len(indices), np.nan), np.zeros(len(indices), dtype=bool)
        full_scores, full_ok, errors = predictor.dist.gather_scores(len(paths), indices, row_scores, row_ok, error)
        if errors:
            raise FrameDecodeError(errors[0])
        extra = {} if variant is None else {"perturbation": variant.key, "perturb_seed": predictor.perturb_seed}
        out.append(
            Predictions(
                model=model_name, dataset=dataset, paths=paths, labels=labels.copy(), video_ids=list(video_ids),
                scores=full_scores, ok=full_ok, meta={**meta, **extra}, groups=_label_groups(records),
            )  # fmt: skip
        )
    return out


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

    from eval.provenance import slug

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
