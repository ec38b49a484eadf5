"""The study's stages as work units: what a job does, and how the cache says it is done.

Each stage's units are planned from what earlier stages left in the study folder (the same plans the local run
uses: :func:`~study.families.plan_families`, :func:`~study.stats.plan_stats`, :func:`~study.candidates.plan_merges`,
the score store's keys, :func:`~study.soups.plan_soups`, :func:`~study.robustness.robustness_plan`); a stage whose
inputs do not exist yet raises :class:`NotReady`. Planning never trains, merges or scores anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.families import family_finished
from study.selection import Entry


class NotReady(Exception):
    """A stage's inputs are not all there: an earlier stage is unfinished."""


@dataclass(frozen=True)
class Unit:
    key: str  # unique in its stage and stable across runs: the job book's key
    label: str
    payload: Any = field(repr=False)
    done: Callable[[], bool] = field(repr=False, compare=False)
    group: str = ""  # train: the family (a family is assembled once all its units are done)


def part_folder(study, family: str, ingredient: str) -> Path:
    """Where an ingredient's job trains it, before the family is assembled from its parts."""
    return study.output / "jobs" / "parts" / family / ingredient


class Planner:
    """Plans one stage at a time for a :class:`~study.runner.StudyRun` (its hashes, score store, families)."""

    def __init__(self, run):
        self.run, self.study, self.out = run, run.study, run.study.output

    # ------------------------------------------------------------ synthetic benchmarks and training

    def synth(self) -> list[Unit]:
        from mergekit_clip.data.synthetic import MANIFEST

        return [Unit(str(step.out), f"synth {step.out}", i, lambda s=step: (s.out / MANIFEST).exists())
                for i, step in enumerate(self.study.synth)]  # fmt: skip

    def train(self) -> list[Unit]:
        """One unit per ingredient of every family trained from a config (finished families included)."""
        units = []
        for name, plan in self.run.family_plans.items():
            if plan.config_file is None:
                continue
            finished = family_finished(plan)
            for ingredient in plan.train_config().ingredients():
                part = part_folder(self.study, name, ingredient.name)
                units.append(Unit(f"{name}/{ingredient.name}", f"train {name}/{ingredient.name}",
                                  (name, ingredient.name, str(part)),
                                  lambda f=finished, p=part: f or (p / "summary.json").exists(), group=name))
        return units  # fmt: skip

    def ready_families(self) -> list[str]:
        """Unfinished families whose ``backbone_from`` family (if any) is finished: trainable now."""
        plans = self.run.family_plans
        out = []
        for name, plan in plans.items():
            parent = self.study.families[name].backbone_from
            if not family_finished(plan) and (parent is None or family_finished(plans[parent])):
                out.append(name)
        return out

    def load_families(self) -> None:
        from mergekit_clip.recipe import load_family

        unfinished = [n for n, p in self.run.family_plans.items() if not family_finished(p)]
        if unfinished:
            raise NotReady(f"families not trained yet: {', '.join(unfinished)}")
        self.run.families = {n: load_family(p.output) for n, p in self.run.family_plans.items()}

    # ------------------------------------------------------------ statistics and merges

    def stats(self) -> list[Unit]:
        from study.candidates import plan_merges
        from study.stats import is_fresh, plan_stats

        self.load_families()
        jobs = plan_stats(self.study, plan_merges(self.study, self.run.families, None), self.run.families)
        hashes = self.run.hashes
        return [Unit(f"{job.ingredient.name}/{job.kind}", f"stats {job.kind} {job.ingredient.name}", job,
                     lambda j=job: is_fresh(j, hashes)) for job in jobs]  # fmt: skip

    def merge(self) -> list[Unit]:
        from study.candidates import plan_merges

        if not all(u.done() for u in self.stats()):  # a data-aware candidate's key hashes its statistics
            raise NotReady("merge statistics not computed yet")
        self.run.candidates = plan_merges(self.study, self.run.families, self.run.hashes)
        out = self.out
        return [Unit(f"{c.group}/{c.key}", f"merge {c.name}", c,
                     lambda c=c: (c.model_dir(out) / "config.json").exists())
                for c in self.run.candidates]  # fmt: skip

    # ------------------------------------------------------------ scores

    def model_entries(self) -> list[Entry]:
        """Ingredients and merge candidates, as the local run's validation step lists them."""
        if not all(u.done() for u in self.merge()):
            raise NotReady("merge candidates not merged yet")
        hashes = self.run.hashes
        entries = self.run.ingredient_entries()
        entries += [Entry(c.name, "merge", c.group, c.model_dir(self.out), hashes.model(c.model_dir(self.out)),
                          method=c.method, params=c.params, searched=c.searched, family=c.family)
                    for c in self.run.candidates]  # fmt: skip
        hashes.save()
        return entries

    def _score_units(self, entries: list[Entry], pairs) -> list[Unit]:
        store = self.run.store
        return _unique([Unit(f"{e.model_hash[:16]}/{d}__{s}", f"score {e.name} on {d}/{s}", (str(e.path), e.model_hash,
                     e.name, d, s), lambda e=e, d=d, s=s: store.has(e.model_hash, d, s))
                for e in entries for d, s in pairs])  # fmt: skip

    def val(self) -> list[Unit]:
        return self._score_units(self.model_entries(), self.run._val_pairs())

    def soup_entries(self) -> list[Entry]:
        from study.soups import plan_soups

        plans = plan_soups(self.study, self.run.families, self.run.hashes, self.run._val_key())
        entries = []
        for plan in plans:
            model_dir = plan.model_dir(self.out)
            digest = self.run.hashes.model(model_dir) if (model_dir / "config.json").exists() else ""
            entries.append(Entry(plan.name, "soup", plan.name, model_dir, digest, method=f"{plan.method} soup",
                                 family=plan.family))  # fmt: skip
        return entries

    def soups(self) -> list[Unit]:
        if not self.study.soups:
            return []
        if not all(u.done() for u in self.val()):
            raise NotReady("models not scored on val yet")
        pairs, store = self.run._val_pairs(), self.run.store

        def done() -> bool:
            entries = self.soup_entries()
            return all(e.model_hash and all(store.has(e.model_hash, d, s) for d, s in pairs) for e in entries)

        return [Unit("soups", f"soups {', '.join(self.study.soups)} (built and scored on val)", None, done)]

    def test(self) -> list[Unit]:
        entries = self.model_entries()
        if not all(u.done() for u in self.soups()):
            raise NotReady("soups not made yet")
        return self._score_units(entries + self.soup_entries(), self.run.test_pairs())

    def robustness(self) -> list[Unit]:
        from study.robustness import robustness_plan

        if self.study.robustness is None:
            return []
        if not all(u.done() for u in self.test()):
            raise NotReady("models not scored on test yet")
        result = self.run.validation()  # every input cached: selection only
        _, models, datasets, specs = robustness_plan(self.study, result)
        entries = {e.name: e for e in result.entries}
        store, split, seed = self.run.store, self.study.data.test_split, self.study.robustness.seed
        return _unique([Unit(f"{entries[m].model_hash[:16]}/{d}/{p.key}", f"robustness {m} on {d} | {p.key}",
                     (str(entries[m].path), entries[m].model_hash, m, d, p),
                     lambda e=entries[m], d=d, p=p: store._file(e.model_hash, d, split, p, seed).exists())
                for m in models for d in datasets for p in specs])  # fmt: skip


def _unique(units: list[Unit]) -> list[Unit]:
    """One unit per key: two models with the same weights (a linear merge of two and their uniform soup) share
    their score files, so they are scored once."""
    return list({u.key: u for u in units}.values())
