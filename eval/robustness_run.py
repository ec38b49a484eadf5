"""Score models clean and under perturbations in one pass and build (or write) the report: the driver on top of
:mod:`eval.robustness` (the tables, figures and markdown) and :mod:`eval.report` (the report folder), so neither of
those imports the other's caller.

    from eval.robustness_run import evaluate_robustness
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from eval.predict import Predictions, Predictor, Record
from eval.provenance import model_provenance, unique_names
from eval.report import build_results, write_report
from eval.robustness import predict_perturbed
from mergekit_clip.data.perturbations import Perturbation, expand_perturbations
from mergekit_clip.metrics import VideoAggregate, VideoIdMode


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
        for dataset, recs in records.items():  # clean and perturbed in one pass: each frame decoded once
            preds += predict_perturbed(predictor, model, recs, name, dataset, [None] * include_clean + todo, **prov)
        del model
    report = (
        write_report(preds, out, video_id, overwrite, aggregate) if out else build_results(preds, video_id, aggregate)
    )
    return {**report, "predictions": preds}
