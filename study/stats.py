"""Merge statistics of the data-aware candidates, computed before they merge.

A candidate whose method reads statistics (``regmean``: Gram matrices, ``fisher``: diagonal Fisher; the table is
``mergekit_clip.plugin.methods.STATS_KINDS``) needs them beside every ingredient it merges. The study computes
what is missing with the same code as ``mergekit-clip stats`` (:func:`mergekit_clip.stats.compute.compute_stats`),
on each ingredient's own training data by default (a specialist's own forgery family, as RegMean and Fisher
merging use each model's own task data), and reuses a file computed for the same weights and preprocessing on
the same frames (dataset file's digest, split, frames per video, compression, cap) and, for Fisher, the same
label rule.
Selection never depends on them: they are inputs of a merge, read from train (or val) splits only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import click
from tqdm import tqdm

from mergekit_clip.plugin.methods import STATS_KINDS
from mergekit_clip.recipe import Family
from mergekit_clip.stats.store import stats_path


@dataclass(frozen=True)
class StatsJob:
    ingredient: Path
    kind: str
    dataset: str
    split: str
    max_frames: int | None
    frame_num: int | None
    compression: str
    fisher_label: str | None  # fisher only: the label its gradients use
    json_root: Path | None = None  # where the dataset's file lies (its digest is part of what fresh means)


def _dataset_of(ingredient, study) -> str:
    own = ingredient.train_dataset
    if study.stats.dataset == "own" and own and "+" not in own:
        return own
    return study.data.sources[0]  # multi-dataset ingredients (and dataset: source) use the study's source


def plan_stats(study, candidates, families: dict[str, Family]) -> list[StatsJob]:
    """One job per (ingredient, kind) that some candidate's method needs, in candidate order, without repeats."""
    jobs: dict[tuple[str, str], StatsJob] = {}
    for candidate in candidates:
        kind = STATS_KINDS.get(candidate.method)
        if kind is None:
            continue
        by_name = {i.name: i for i in families[candidate.family].ingredients}
        for name in candidate.ingredients:
            ingredient = by_name[name]
            jobs.setdefault((str(ingredient.path), kind), StatsJob(
                ingredient.path, kind, _dataset_of(ingredient, study), study.stats.split, study.stats.max_frames,
                study.data.frame_num, study.data.compression, study.stats.fisher_label if kind == "fisher" else None,
                study.data.json_root))
    return list(jobs.values())  # fmt: skip


def is_fresh(job: StatsJob, hashes=None, rebuild: bool = True) -> bool:
    """The stats file exists, matches the digest recorded beside it, and its metadata says it was computed as
    ``job`` asks, from these weights and this preprocessing (``hashes``: the study's
    :class:`~study.hashing.FileHashes`, so unchanged files are not read again). A file from before a field (or
    its digest) was recorded is stale once; a file that fails its digest is recomputed with one warning, or
    refused when ``rebuild`` is off."""
    from safetensors import SafetensorError, safe_open

    from mergekit_clip.data.formats import dataset_identity
    from mergekit_clip.detector.io import detector_spec, weights_hash
    from mergekit_clip.digest import file_sha256
    from mergekit_clip.integrity import distrust, mismatch, recorded_digest
    from mergekit_clip.stats.compute import stats_metadata

    path = stats_path(job.ingredient, job.kind)
    if not path.exists():
        return False
    reason = mismatch(path, hashes.file(path) if hashes is not None else file_sha256(path))
    if reason is not None:
        if recorded_digest(path) is None:
            return False  # computed before digests were recorded: recomputed like any stale file
        distrust(path, reason, rebuild=rebuild, what="statistics file")
        return False
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as e:
        distrust(path, f"is not a readable safetensors file ({e})", rebuild=rebuild, what="statistics file")
        return False
    digest = hashes.weights_sha256(job.ingredient) if hashes is not None else weights_hash(job.ingredient)
    wanted = stats_metadata(dataset=job.dataset, split=job.split, frame_num=job.frame_num,
                            compression=job.compression, max_frames=job.max_frames, weights_sha256=digest,
                            preprocess=detector_spec(job.ingredient).preprocess, fisher_label=job.fisher_label,
                            dataset_sha256=dataset_identity(job.dataset, job.json_root).digest)
    return all(meta.get(k) == v for k, v in wanted.items())  # fmt: skip


def run_stats(
    jobs: list[StatsJob], study, *, progress: bool = True, hashes=None, rebuild: bool = True
) -> dict[str, int]:
    """Compute every job whose statistics are missing or stale; returns counts (``computed``, ``reused``)."""
    from mergekit_clip.options import resolve_device
    from mergekit_clip.stats.compute import compute_stats
    from mergekit_clip.stats.store import clear_cache

    todo = [j for j in jobs if not is_fresh(j, hashes, rebuild)]
    d, s = study.data, study.stats
    for job in tqdm(todo, desc="merge statistics", unit="ingredient", disable=not progress or not todo):
        compute_stats(
            job.ingredient, job.kind, dataset=job.dataset, split=job.split, json_root=d.json_root,
            data_root=d.data_root, frame_num=job.frame_num, compression=job.compression, max_frames=job.max_frames,
            batch_size=s.batch_size, fisher_label=job.fisher_label or s.fisher_label,
            device=resolve_device(study.eval.device), **d.root_options(),
        )  # fmt: skip
    if todo:
        clear_cache()  # the merges of this process must read the new files
        click.echo(f"merge statistics: {len(todo)} computed, {len(jobs) - len(todo)} reused")
    return {"computed": len(todo), "reused": len(jobs) - len(todo)}


def stats_commands(jobs: list[StatsJob], study) -> list[str]:
    """The jobs as public ``mergekit-clip stats`` lines (for ``--dry-run``)."""
    d, s = study.data, study.stats
    lines = []
    for job in jobs:
        cmd = ["mergekit-clip", "stats", str(job.ingredient), "--kind", job.kind, "--dataset", job.dataset,
               "--split", job.split, "--json-root", str(d.json_root), "--data-root", str(d.data_root),
               "--compression", d.compression, "--batch-size", str(s.batch_size), *d.root_flags()]  # fmt: skip
        if d.frame_num is not None:
            cmd += ["--frame-num", str(d.frame_num)]
        if job.max_frames is not None:
            cmd += ["--max-frames", str(job.max_frames)]
        if job.kind == "fisher":
            cmd += ["--fisher-label", s.fisher_label]
        lines.append(shlex.join(cmd))
    return lines
