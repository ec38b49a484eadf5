"""What a job runs: :func:`run_units` with the study and a list of one stage's work units.

A job writes only into the content-keyed cache, each file under its own key and atomically (scores through
:class:`~study.scores.ScoreStore`, merges through the plugin's atomic ``run_merge``, statistics and detectors
through their temp-and-rename writers, an ingredient into its own part folder), so a killed job leaves nothing
half-written and two jobs never write the same file. The coordinator learns what is done by looking at the cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def run_units(study, stage: str, units: list[Any]) -> int:
    """The job's entry point (pickled by submitit): run ``units`` of ``stage``; returns how many ran."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if stage not in DISTRIBUTED and _tasks() > 1:
        raise ValueError(f"executor.stages.{stage}.tasks_per_node: only {', '.join(DISTRIBUTED)} run on several tasks")
    if _tasks() > 1:  # torch.distributed's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) from submitit's
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(overwrite=True)
    try:
        WORKERS[stage](study, units)
    finally:
        from mergekit_clip.distributed import shutdown

        shutdown()
    return len(units)


def _tasks() -> int:
    try:
        import submitit

        return submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job (a test calling run_units directly)
        return 1


def _synth(study, units) -> None:
    from study.runner import run_synth_steps

    run_synth_steps(study.model_copy(update={"synth": [study.synth[i] for i in units]}))


def _train(study, units) -> None:
    from study.families import plan_families
    from train.sweep import run_sweep_part

    plans = plan_families(study)
    for family, ingredient, part in units:
        run_sweep_part(plans[family].train_config(), ingredient, Path(part))


def _stats(study, units) -> None:
    from study.stats import run_stats

    run_stats(list(units), study, progress=False)


def _merge(study, units) -> None:
    from study.candidates import run_merges

    run_merges(list(units), study.output, study, progress=False)


def _store(study):
    """The score store; in a job of several tasks each rank scores its shard of the frames and rank 0 writes."""
    from mergekit_clip.distributed import init_distributed
    from study.scores import ScoreStore, make_predictor, records_loader

    info = init_distributed(study.eval.device)
    store = ScoreStore(study.output / "scores", study.data, study.eval, records_loader(study.data),
                       make_predictor(study.eval, info if info.enabled else None))  # fmt: skip
    store.writes = info.is_main
    if info.enabled:
        print(f"scoring as rank {info.rank} of {info.world_size}", flush=True)
    return store


def _score(study, units) -> None:
    """Units: (model dir, model hash, name, dataset, split)."""
    store = _store(study)
    for model_dir, model_hash, name, dataset, split in units:
        store.get(Path(model_dir), model_hash, [(dataset, split)], name)


def _soups(study, units) -> None:
    """Every soup at once: a greedy soup scores its members on val as it grows (all cached by the val stage)."""
    from study.runner import StudyRun

    run = StudyRun(study, progress=False)
    run.prepare()
    run.validation()


def _robustness(study, units) -> None:
    """Units: (model dir, model hash, name, dataset, perturbation)."""
    store = _store(study)
    split, seed = study.data.test_split, study.robustness.seed
    for model_dir, model_hash, name, dataset, spec in units:
        store.get_perturbed(Path(model_dir), model_hash, [(dataset, split)], name, [spec], seed)


DISTRIBUTED = ("train", "val", "test", "robustness")  # the stages whose work torch.distributed shares
WORKERS = {"synth": _synth, "train": _train, "stats": _stats, "merge": _merge, "val": _score, "soups": _soups,
           "test": _score, "robustness": _robustness}  # fmt: skip
