"""Drive a soup end to end: score ingredients on held-out data, select, average, write the detector dir."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.predict import Predictor
from eval.provenance import model_provenance, unique_names
from eval.soup import SoupConfig, make_soup_model, write_soup
from mergekit_clip.detector.io import load_detector
from mergekit_clip.metrics import VideoAggregate, choose_threshold, compute_metrics, video_key


def heldout_score(
    model, predictor: Predictor, records: Sequence, metric: str, aggregate: VideoAggregate = "mean"
) -> float:
    """The soup metric of ``model`` on held-out ``records`` (undecodable frames excluded; videos pooled by
    ``aggregate`` for a video-level metric)."""
    paths = [str(r.path) for r in records]
    scores, ok = predictor.score_paths(model, paths, desc="held-out")
    labels = [int(r.label) for r, keep in zip(records, ok) if keep]
    videos = [video_key(p) for p, keep in zip(paths, ok) if keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a single-class val split gives nan, which the log records
        return float(compute_metrics(labels, scores[ok], videos, aggregate=aggregate, names=[metric])[metric])


def val_threshold(model, predictor: Predictor, records: Sequence) -> float | None:
    """``clip-eval score --threshold-val``'s rule on ``model``: max Youden J on ``records``; None for one class."""
    scores, ok = predictor.score_paths(model, [str(r.path) for r in records], desc="threshold on val")
    labels = np.asarray([int(r.label) for r in records])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threshold = choose_threshold(labels[ok], scores[ok])
    return None if math.isnan(threshold) else threshold


def _clean(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def run_soup(
    dirs: list[str],
    config: SoupConfig,
    predictor: Predictor,
    records: Sequence | None,
    out: str | os.PathLike,
    overwrite: bool = False,
    val_note: str | None = None,
    dataset_sha256: str | None = None,
    threshold_records: Sequence | None = None,
) -> Path:
    """Select (greedy) or average (uniform) ``dirs`` into a soup written to ``out``; with
    ``config.threshold_val`` the soup's threshold on ``threshold_records`` (that dataset's val split) is recorded."""
    names = unique_names(dirs)
    ingredients = [{"name": n, **model_provenance(d)} for n, d in zip(names, dirs)]

    def score(model) -> float:
        return heldout_score(model, predictor, records, config.metric, config.video_aggregate)

    individual = [score(load_detector(d)) for d in dirs] if config.method == "greedy" else None
    model, members, log = make_soup_model(dirs, names, config.method, individual, score, config.tie_rule)
    if config.method == "uniform" and records is not None:
        log.append({"ingredient": "uniform soup", "soup_score": score(model)})
    for entry in log:
        entry["soup_score"] = _clean(entry["soup_score"])
        if "individual" in entry:
            entry["individual"] = _clean(entry["individual"])
    soup = {
        **config.model_dump(),
        "members": [names[i] for i in members],
        "selection_log": log,
        "heldout_frames": len(records) if records is not None else 0,
        "val_note": val_note,
        "val_dataset_sha256": dataset_sha256,
        "merge_method": "mergekit linear (uniform weights, in process)",
    }
    if config.threshold_val:
        soup["val_threshold"] = val_threshold(model, predictor, threshold_records)
        soup["val_threshold_source"] = f"{config.threshold_val}/val (max Youden J)"
    return write_soup(model, out, {"soup": soup, "ingredients": ingredients}, overwrite=overwrite)
