"""Merge candidates: every grid point of every method, merged in process through mergekit's planner.

Each candidate lives in ``OUT/candidates/<group>/<key>/`` (``recipe.yml``, ``candidate.json``, ``model/``),
``key`` = :func:`study.hashing.recipe_key`. ``model/`` is written atomically (the plugin's ``run_merge`` hook
moves a finished temp dir into place), so a killed study leaves finished candidates whole and the rest absent:
the next run merges only those. ``mergekit.merge.run_merge`` is looked up as a module attribute at call time,
so the plugin's hook (preflight, forensic-head policy, merged config) applies exactly as under ``mergekit-yaml``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mergekit_clip.recipe import Family, build_recipe, recipe_yaml, select_ingredients, validate_recipe
from study.hashing import (
    MODEL_DIGEST,
    FileHashes,
    key_files,
    recipe_key,
    verified_model,
    write_json_atomic,
)


@dataclass(frozen=True)
class MergeCandidate:
    group: str
    method: str
    family: str
    params: dict[str, Any]  # this grid point (searched and fixed values)
    searched: tuple[str, ...]  # the grid's searched parameter names
    ingredients: tuple[str, ...]
    recipe: dict[str, Any] = field(repr=False)
    key: str | None  # None until the inputs exist (dry run of an untrained family)

    @property
    def name(self) -> str:
        shown = {k: self.params[k] for k in self.searched} or self.params
        inner = ",".join(f"{k}={v}" for k, v in shown.items())
        return f"{self.group}[{inner}]" if inner else self.group

    def directory(self, out: Path) -> Path:
        return out / "candidates" / self.group / (self.key or "pending")

    def model_dir(self, out: Path) -> Path:
        return self.directory(out) / "model"


def merge_options(study) -> dict[str, Any]:
    """The options that change a merge's result, part of its key."""
    return {"random_seed": study.mergekit.random_seed}


def plan_merges(study, families: dict[str, Family], hashes: FileHashes | None) -> list[MergeCandidate]:
    """Every candidate of every group, in study-file order; recipes use absolute paths."""
    planned = []
    for group, entry in study.merges.items():
        if entry.search is not None:
            continue  # an Optuna search proposes its candidates as it runs (study.search)
        method = entry.method or group
        fam_name = study.family_of(entry)
        family = families[fam_name]
        chosen = select_ingredients(family, entry.select)
        for point in entry.points():
            recipe = build_recipe(method, family, chosen, point, absolute_paths=True)
            validate_recipe(recipe)
            planned.append((group, entry, method, fam_name, chosen, point, recipe))
    if hashes is not None:  # every input file hashed once per study (cold cache: in parallel), then looked up
        inputs = [key_files(recipe) for *_, recipe in planned]
        hashes.prefetch([f for w, _ in inputs for f in w], [f for _, st in inputs for f in st])
    out = []
    for group, entry, method, fam_name, chosen, point, recipe in planned:
        key = recipe_key(recipe, hashes, merge_options(study)) if hashes is not None else None
        out.append(
            MergeCandidate(
                group=group, method=method, family=fam_name, params=point, searched=tuple(entry.searched()),
                ingredients=tuple(i.name for i in chosen), recipe=recipe, key=key,
            )
        )  # fmt: skip
    return out


def write_recipe(candidate: MergeCandidate, file: Path) -> Path:
    key = f" (key {candidate.key})" if candidate.key else ""
    header = f"study candidate {candidate.name}{key}\nrun with:   mergekit-yaml {file} OUT_DIR"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(recipe_yaml(candidate.recipe, header))
    return file


def merge_candidate(candidate: MergeCandidate, out: Path, study) -> Path:
    """Merge one candidate in process (stock mergekit planning + our plugin); returns its model dir."""
    import mergekit.merge
    from mergekit.merge import MergeOptions

    directory = candidate.directory(out)
    config = validate_recipe(candidate.recipe)
    options = MergeOptions(
        random_seed=study.mergekit.random_seed, device=study.mergekit.device, quiet=True, write_model_card=False,
        copy_tokenizer=False,
    )  # fmt: skip
    write_recipe(candidate, directory / "recipe.yml")
    mergekit.merge.run_merge(config, str(directory / "model"), options)
    return directory / "model"


def run_merges(
    candidates: list[MergeCandidate],
    out: Path,
    study,
    *,
    progress: bool = True,
    hashes: FileHashes | None = None,
    rebuild: bool = True,
) -> dict[str, int]:
    """Merge every candidate whose model dir is missing; a finished one is never merged again.

    With ``hashes``, each new model is hashed (its score key) right after it is written, while its files are still
    in the page cache (after many candidates, the early ones would be read back from disk); the study's later
    ``hashes.model(model_dir)`` is then a lookup. A finished candidate is reused only if its model still hashes to
    the digest its ``candidate.json`` recorded (:func:`study.hashing.verified_model`; ``rebuild=False`` refuses a
    mismatch instead of merging it again).
    """
    todo = [
        c for c in candidates
        if not (c.model_dir(out) / "config.json").exists()
        or (hashes is not None and not verified_model(c.directory(out), hashes, rebuild=rebuild))
    ]  # fmt: skip
    counts = {"reused": len(candidates) - len(todo), "merged": 0}
    # mergekit and the plugin log a few warnings per merge (and a traceback when mergekit's architecture
    # inference probes transformers): they would bury the progress bar; merge_log.json keeps what the plugin did.
    logging.disable(logging.WARNING)
    try:
        for candidate in tqdm(todo, desc="merge candidates", unit="merge", disable=not progress or not todo):
            merge_candidate(candidate, out, study)
            _record(candidate, out, hashes)
            counts["merged"] += 1
    finally:
        logging.disable(logging.NOTSET)
    for candidate in candidates:  # killed between the model and its record: write the record now
        if not (candidate.directory(out) / "candidate.json").exists():
            _record(candidate, out, hashes)
    return counts


def _record(candidate: MergeCandidate, out: Path, hashes: FileHashes | None) -> None:
    record = {
        "name": candidate.name, "group": candidate.group, "method": candidate.method,
        "family": candidate.family, "params": candidate.params, "ingredients": list(candidate.ingredients),
        "key": candidate.key, "recipe": candidate.recipe,
    }  # fmt: skip
    if hashes is not None:  # the new model's digest (also its score key), read while it is in the page cache
        record[MODEL_DIGEST] = hashes.model(candidate.model_dir(out))
    write_json_atomic(candidate.directory(out) / "candidate.json", record)
