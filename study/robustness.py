"""Robustness of the selected models: is the val-selected merge (and soup) more robust than the val-selected
ingredient under perturbations none of them saw?

After selection and testing, the study scores its val-selected merge, its val-selected soup (or the groups the
``robustness`` section names) and the val-selected ingredient on held-out test sets under ``clip-eval``'s
perturbation suites (:mod:`mergekit_clip.data.perturbations`; the same seeded code, applied in the data workers).
Scores are kept in the study's score store (keyed by model hash, split, perturbation and seed), so a rerun scores
nothing twice. The tables and figures are ``eval.robustness``'s (AUC against severity, the mean over levels, the
drop from clean). The verdict is a paired video bootstrap of the mean AUC over every perturbed condition: the
compared model minus the reference, where all conditions of one dataset share its video draws (they are one sample
of videos scored several times); "more robust" when the interval lies above 0, "less robust" below, else "within
noise".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from study.scores import SplitScores
from study.selection import ALL_MERGES, ALL_SOUPS, Entry, Selection

LEVELS = ("frame", "video")
VERDICTS = {"helped": "more robust", "hurt": "less robust", "within noise": "within noise"}


def compared_groups(entries: Sequence[Entry], selection: Selection, groups: Sequence[str] | None) -> list[str]:
    """The groups whose val-selected model meets the reference: as asked, or the overall merge and soup."""
    if groups is not None:
        return list(groups)
    out = []
    for kind, overall in (("merge", ALL_MERGES), ("soup", ALL_SOUPS)):
        kinds = list(dict.fromkeys(e.group for e in entries if e.kind == kind))
        if overall in selection.selected:
            out.append(overall)
        elif kinds:
            out.append(kinds[0])  # one group of this kind: it is the overall choice
    return out


def _predictions(name: str, dataset: str, scores: SplitScores, perturbation: str | None):
    from eval.predict import Predictions

    # eval.robustness pools frames into videos by their folder: one synthetic path per frame inside its video id
    paths = [f"{video}/{i}" for i, video in enumerate(scores.video_ids)]
    meta = {} if perturbation is None else {"perturbation": perturbation}
    return Predictions(model=name, dataset=dataset, paths=paths, labels=scores.labels, video_ids=list(scores.video_ids),
                       scores=scores.scores, ok=np.ones(scores.labels.size, bool), meta=meta)  # fmt: skip


def _frames(scores: Mapping[tuple[str, str], SplitScores]):
    from eval.bootstrap import ScoredFrames

    frames = {f"{d}|{k}": ScoredFrames(s.labels, s.scores, s.video_ids) for (d, k), s in scores.items()}
    return frames, {f"{d}|{k}": d for d, k in scores}


def robustness_plan(study, result) -> tuple[dict[str, str], list[str], list[str], list]:
    """(roles -> model, the models, the datasets, the perturbation specs) the robustness step scores."""
    from mergekit_clip.data.perturbations import expand_perturbations

    cfg = study.robustness
    selection = result.selection
    groups = compared_groups(result.entries, selection, cfg.groups)
    roles = {"reference (val-selected ingredient)": selection.reference}
    roles |= {group: selection.selected[group] for group in groups}
    models = list(dict.fromkeys(roles.values()))
    return roles, models, list(cfg.datasets or study.data.test), expand_perturbations(cfg.perturbations)


def run_robustness(run, result, test: Mapping[str, Mapping[str, SplitScores]]) -> dict[str, Any] | None:
    """Score, tabulate and judge; returns the ``robustness`` part of study.json (None without the section)."""
    from eval.bootstrap import paired_auc_difference, verdict
    from eval.robustness import build_robustness

    study = run.study
    cfg = study.robustness
    if cfg is None:
        return None
    roles, models, datasets, specs = robustness_plan(study, result)
    split = study.data.test_split
    selection = result.selection
    entries = {e.name: e for e in result.entries}
    perturbed: dict[str, dict[tuple[str, str], SplitScores]] = {name: {} for name in models}
    conditions = [(d, p) for d in datasets for p in specs]
    bar = tqdm(total=len(models) * len(conditions), desc="robustness", unit="condition", disable=not run.progress)
    for dataset, spec in conditions:  # condition-major: every model reads the frames while they are cached
        for name in models:
            entry = entries[name]
            got = run.store.get_perturbed(entry.path, entry.model_hash, [(dataset, split)], name, [spec], cfg.seed)
            perturbed[name] |= {(d, key): s for (d, _, key), s in got.items()}
            bar.update()
    bar.close()
    preds = [_predictions(n, d, s, key) for n in models for (d, key), s in perturbed[n].items()]
    clean = [{"model": n, "dataset": d, "frame_auc": test[n][d].auc("frame"), "video_auc": test[n][d].auc("video")}
             for n in models for d in datasets]  # fmt: skip
    tables = build_robustness(preds, clean, models=models)
    b = study.bootstrap
    boot = {"n_boot": b.n_boot, "seed": b.seed, "confidence": b.confidence}
    ref_frames, resample_as = _frames(perturbed[selection.reference])
    vs_reference: dict[str, Any] = {}
    for name in models:
        if name == selection.reference:
            continue
        frames, _ = _frames(perturbed[name])
        vs_reference[name] = {}
        for level in LEVELS:
            iv = paired_auc_difference(frames, ref_frames, level=level, resample_as=resample_as, **boot)
            vs_reference[name][level] = {"estimate": iv.estimate, "low": iv.low, "high": iv.high,
                                         "verdict": VERDICTS[verdict(iv)]}  # fmt: skip
    return {
        "perturbations": [p.key for p in specs],
        "datasets": datasets,
        "split": split,
        "seed": cfg.seed,
        "roles": roles,
        "models": models,
        "means": tables["means"],
        "vs_reference": vs_reference,
        "tables": tables,
        "note": "mean = AUC averaged over every perturbation, level and dataset; drop = clean AUC - that mean; "
        "Δ = paired video bootstrap of the mean against the reference (conditions of a dataset share its draws)",
    }


def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def robustness_table(doc: Mapping[str, Any]) -> str:
    """One row per compared model: mean AUC under perturbations, drop from clean, Δ vs reference, verdict."""
    rows = []
    for role, name in doc["roles"].items():
        means = doc["means"][name]
        vs = doc["vs_reference"].get(name)
        cells = [role, f"`{name}`"]
        for level in LEVELS:
            cells += [_f(means[f"{level}_auc"]), _f(means[f"drop_{level}_auc"], signed=True)]
            if vs is None:
                cells += ["(reference)", ""]
            else:
                d = vs[level]
                cells += [f"{_f(d['estimate'], True)} [{_f(d['low'], True)}, {_f(d['high'], True)}]", d["verdict"]]
        rows.append(cells)
    header = ["compared", "model"]
    for level in LEVELS:
        header += [f"mean {level} AUC perturbed", "drop from clean", f"{level} Δ vs reference", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_robustness_outputs(doc: Mapping[str, Any], directory: Path) -> tuple[str, list[str]]:
    """``OUT/robustness/`` (CSV and per-dataset severity plots) and the markdown section for report.md."""
    from eval.robustness import robustness_markdown, write_robustness

    directory.mkdir(parents=True, exist_ok=True)
    try:
        figures = [f"{directory.name}/{f}" for f in write_robustness(doc["tables"], directory)]
    except ImportError:  # matplotlib missing: the CSV is written first, the numbers stand without the plots
        figures = []
    n = len(doc["perturbations"])
    intro = (f"Perturbations: {n} conditions ({', '.join(doc['perturbations'][:3])}, ...; seed {doc['seed']}) on "
             f"{', '.join(doc['datasets'])} ({doc['split']} split). {doc['note']}.")  # fmt: skip
    text = "\n".join(["## Is the merge more robust? (selected models under perturbations)", "", intro, "",
                      robustness_table(doc), "", robustness_markdown(doc["tables"]).replace("## ", "### ", 1)])
    return text, figures
