"""Uniform and greedy soups (model-soups, Wortsman et al. 2022) of a family's ingredients, keyed like merges.

A greedy soup ranks ingredients by their source-val score and admits each next one only if the soup's
source-val score improves (:func:`eval.soup.greedy_select`): it reads validation scores only. The soup's
detector is written once to ``OUT/candidates/<soup>/<key>/model``; ``key`` hashes the method, the members'
weights and (greedy) the val frames and metric, so a rerun reuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.soup import make_soup_model, write_soup
from mergekit_clip.recipe import Family, select_ingredients
from study.hashing import FileHashes, canonical_hash, write_json_atomic


@dataclass(frozen=True)
class SoupPlan:
    name: str
    method: str  # uniform | greedy
    family: str
    pool: tuple[str, ...]  # ingredient names it may use
    pool_dirs: tuple[Path, ...]
    tie_rule: str
    key: str | None

    def directory(self, out: Path) -> Path:
        return out / "candidates" / self.name / (self.key or "pending")

    def model_dir(self, out: Path) -> Path:
        return self.directory(out) / "model"


def plan_soups(study, families: dict[str, Family], hashes: FileHashes | None, val_key: str) -> list[SoupPlan]:
    out = []
    for name, entry in study.soups.items():
        fam_name = study.family_of(entry)
        chosen = select_ingredients(families[fam_name], entry.select)
        method = entry.method or name
        key = None
        if hashes is not None:
            content: dict[str, Any] = {"method": method, "members": [hashes.model(i.path) for i in chosen]}
            if method == "greedy":
                content.update(val=val_key, metric=study.selection.metric, tie_rule=entry.tie_rule)
            key = canonical_hash(content)
        out.append(
            SoupPlan(name, method, fam_name, tuple(i.name for i in chosen), tuple(i.path for i in chosen),
                     entry.tie_rule, key)
        )  # fmt: skip
    return out


def make_soup(
    plan: SoupPlan,
    out: Path,
    individual: Sequence[float],
    val_score: Callable[[Any], float],
) -> Path:
    """Build and write the soup; ``individual`` = each pool member's val score, ``val_score(model)`` a soup's."""
    dirs = [str(p) for p in plan.pool_dirs]
    model, members, log = make_soup_model(dirs, list(plan.pool), plan.method, individual, val_score, plan.tie_rule)
    record = {"method": plan.method, "members": [plan.pool[i] for i in members], "pool": list(plan.pool),
              "selection_log": log, "tie_rule": plan.tie_rule, "selected_on": "source val"}  # fmt: skip
    directory = plan.directory(out)
    write_soup(model, directory / "model", {"soup": record}, overwrite=True)
    write_json_atomic(directory / "candidate.json", {"name": plan.name, "key": plan.key, **record})
    return directory / "model"
