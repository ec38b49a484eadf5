"""Learned layer-wise merges of a study (``learned.<name>``), keyed by content like every candidate.

The coefficients are fitted (:func:`eval.learned_merge.learn_merge`) on the labelled frames the chosen protocol's
source split offers (:func:`study.objective.labelled_records`), then the emitted stock mergekit recipe is merged in
process into ``OUT/candidates/<name>/<key>/model`` beside ``recipe.yml`` and ``learned.json``. The key hashes the
options, the ingredients' (and base's) model hashes and the frames' identity, so a rerun reuses the model.
"""

from __future__ import annotations

import logging

import click
import torch

from mergekit_clip.recipe import select_ingredients
from study.hashing import canonical_hash
from study.objective import labelled_records
from study.selection import Entry


def _even(items: list, n: int | None) -> list:
    if n is None or len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else items[:1]


def run_learned(run) -> list[Entry]:
    """Fit (or reuse) every learned merge of the study; returns their entries (kind ``merge``)."""
    from eval.learned_merge import LearnOptions, learn_merge, load_frames, write_learned_merge
    from mergekit_clip.detector.io import detector_spec

    entries = []
    for name, cfg in run.study.learned.items():
        fam_name = run.study.family_of(cfg)
        family = run.families[fam_name]
        chosen = select_ingredients(family, cfg.select)
        base = family.base if cfg.form == "task_arithmetic" else None
        options = LearnOptions(form=cfg.form, objective=cfg.objective, steps=cfg.steps, lr=cfg.lr,
                               batch_size=cfg.batch_size, init=cfg.init, seed=cfg.seed, device=cfg.device)  # fmt: skip
        content = {"options": {**options.__dict__, "device": None}, "max_frames": cfg.max_frames,
                   "ingredients": [run.hashes.model(i.path) for i in chosen],
                   "base": run.hashes.model(base) if base is not None else None, "frames": run._val_key()}  # fmt: skip
        directory = run.out / "candidates" / name / canonical_hash(content)
        model_dir = directory / "model"
        if not (model_dir / "config.json").exists():
            records = _even(list(labelled_records(run)), cfg.max_frames)
            preprocess = detector_spec(chosen[0].path).preprocess
            frames = load_frames([str(r.path) for r in records], preprocess)
            labels = torch.tensor([int(r.label) for r in records])
            click.echo(f"learned merge {name} ({cfg.form}) over {len(chosen)} ingredients on {len(records)} frames")
            result = learn_merge([i.path for i in chosen], frames, labels, options, base=base)
            logging.disable(logging.WARNING)  # mergekit's per-merge warnings, as in run_merges
            try:
                write_learned_merge(result, directory, header=f"study learned merge {name} ({cfg.form})")
            finally:
                logging.disable(logging.NOTSET)
        entries.append(Entry(name, "merge", name, model_dir, run.hashes.model(model_dir),
                             method=f"learned {cfg.form}", family=fam_name))  # fmt: skip
    return entries
