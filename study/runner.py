"""Run a study end to end, in one process: data -> families -> merge candidates -> val scores -> selection on
val -> test scores -> error bars -> report. Every step keeps what it made, so a rerun does only what is missing.

The phases are separate on purpose: :meth:`StudyRun.validation` merges, scores on the source val split and
selects, reading records through the loader for val splits only; :meth:`StudyRun.testing` then scores test
splits. Selection is finished before any test split is read (a test checks it with a loader that raises).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import click
import numpy as np
from tqdm import tqdm

from mergekit_clip.recipe import Family
from study.candidates import MergeCandidate, plan_merges, run_merges
from study.config import StudyConfig
from study.families import FamilyPlan, ensure_family, plan_families
from study.hashing import FileHashes, canonical_hash, record_model_digest, verified_model
from study.learned import run_learned
from study.protocols import honest_protocols, score_protocols, transductive_protocols
from study.robustness import run_robustness
from study.scores import RecordsLoader, ScoreStore, SplitScores, make_predictor, metric_value, records_loader
from study.search import SearchOutcome, run_searches
from study.selection import INGREDIENTS, Entry, Selection, select_by_scores
from study.soups import SoupPlan, make_soup, plan_soups
from study.stats import plan_stats, run_stats


def run_synth_steps(study: StudyConfig) -> None:
    from mergekit_clip.data.synthetic import MANIFEST, synthesize

    for step in study.synth:
        if (step.out / MANIFEST).exists():
            click.echo(f"(reusing benchmark {step.out})")
            continue
        click.echo(f"mergekit-clip data synth {step.out} --preset {step.preset} --seed {step.seed}")
        synthesize(step.out, step.preset, step.seed)


@dataclass
class ValidationResult:
    entries: list[Entry]
    val: dict[str, dict[str, SplitScores]]  # model -> source dataset -> val scores
    selection: Selection  # the driving protocol's (selection.protocol)
    merges: dict[str, int]
    proxies: dict = field(default_factory=dict)  # protocol name -> study.protocols.ProxyScores
    selections: dict[str, Selection] = field(default_factory=dict)  # protocol name -> its picks


class StudyRun:
    """One run of a study file; ``loader`` reads (dataset, split) records (the study's data section by default)."""

    def __init__(
        self, study: StudyConfig, loader: RecordsLoader | None = None, progress: bool = True, rebuild: bool = True
    ):
        self.study, self.out, self.progress, self.rebuild = study, study.output, progress, rebuild
        self.loader = loader or records_loader(study.data)
        self.hashes = FileHashes(self.out / "cache" / "file_hashes.json")
        self.store = ScoreStore(self.out / "scores", study.data, study.eval, self.loader, make_predictor(study.eval),
                                rebuild=rebuild)  # fmt: skip
        self.family_plans: dict[str, FamilyPlan] = plan_families(study)
        self.families: dict[str, Family] = {}
        self.candidates: list[MergeCandidate] = []
        self.soups: list[SoupPlan] = []
        self.searches: list[SearchOutcome] = []
        self.timings: dict[str, float] = {}
        self.stats_counts: dict[str, int] = {}
        self.val: dict[str, dict[str, SplitScores]] = {}  # model -> source dataset -> val scores
        self.protocol_state: dict[str, dict] = {}  # what a protocol keeps between calls (a shadow study)

    # ------------------------------------------------------------ phase 0: data and families

    def prepare(self) -> None:
        t0 = time.perf_counter()
        run_synth_steps(self.study)
        self.timings["synth_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for name, plan in self.family_plans.items():
            self.families[name] = ensure_family(plan)
        self.timings["families_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------ phase 1: merge, score on val, select

    def _val_pairs(self) -> list[tuple[str, str]]:
        return [(d, self.study.data.val_split) for d in self.study.data.sources]

    def _val_key(self) -> str:
        d = self.study.data
        return canonical_hash([d.json_root.name, d.sources, d.val_split, d.frame_num, d.compression])

    def ingredient_entries(self) -> list[Entry]:
        entries = []
        for name in self.study.ingredient_families():
            family = self.families[name]
            multi = len(self.study.ingredient_families()) > 1
            for ing in family.ingredients:
                label = f"{name}/{ing.name}" if multi else ing.name
                entries.append(Entry(label, "ingredient", INGREDIENTS, ing.path, self.hashes.model(ing.path),
                                     method=ing.mode, params={"mode": ing.mode, "lr": ing.lr, "seed": ing.seed},
                                     family=name))
        return entries  # fmt: skip

    def score(self, entry: Entry, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], SplitScores]:
        return self.store.get(entry.path, entry.model_hash, pairs, entry.name)

    def validation(self) -> ValidationResult:
        """Merge every candidate, score every model on source val, build soups on val, select on val."""
        t0 = time.perf_counter()
        # statistics first: a data-aware candidate's key hashes the statistics files it reads
        jobs = plan_stats(self.study, plan_merges(self.study, self.families, None), self.families)
        self.stats_counts = run_stats(jobs, self.study, progress=self.progress, hashes=self.hashes,
                                      rebuild=self.rebuild)  # fmt: skip
        self.timings["stats_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.candidates = plan_merges(self.study, self.families, self.hashes)
        counts = run_merges(self.candidates, self.out, self.study, progress=self.progress, hashes=self.hashes,
                            rebuild=self.rebuild)  # fmt: skip
        self.hashes.save()
        self.timings["merge_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.searches = run_searches(self)  # Optuna searches: each trial a keyed candidate, scored as it runs
        self.candidates += [c for outcome in self.searches for c in outcome.candidates]
        self.timings["search_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        entries = self.ingredient_entries()
        entries += [
            Entry(c.name, "merge", c.group, c.model_dir(self.out), self.hashes.model(c.model_dir(self.out)),
                  method=c.method, params=c.params, searched=c.searched, family=c.family)
            for c in self.candidates
        ]  # fmt: skip
        entries += run_learned(self)  # learned layer-wise merges: fitted on the labelled val frames
        pairs = self._val_pairs()
        val: dict[str, dict[str, SplitScores]] = {}
        for entry in tqdm(entries, desc="score on source val", unit="model", disable=not self.progress):
            val[entry.name] = {d: s for (d, _), s in self.score(entry, pairs).items()}
        entries += self._soups(val, pairs)
        for entry in entries:
            if entry.name not in val:
                val[entry.name] = {d: s for (d, _), s in self.score(entry, pairs).items()}
        self.hashes.save()
        self.val = val
        self.timings["val_s"] = time.perf_counter() - t0
        proxies = {}
        for name, config in honest_protocols(self.study).items():  # none of them reads a test label
            t0 = time.perf_counter()
            proxies |= score_protocols(self, entries, {name: config})
            if name != "source_val":
                self.timings[f"protocol_{name}_s"] = time.perf_counter() - t0
        selections = {name: select_by_scores(entries, p.scores, p.ties, p.metric, p.tie_break, name)
                      for name, p in proxies.items()}  # fmt: skip
        selection = selections[self.study.selection.protocol]
        return ValidationResult(entries=entries, val=val, selection=selection, merges=counts, proxies=proxies,
                                selections=selections)  # fmt: skip

    def val_scores(self, entries: list[Entry]) -> dict[str, dict[str, SplitScores]]:
        """Each model's scores on the source val split (already computed by :meth:`validation`, else now)."""
        for entry in entries:
            if entry.name not in self.val:
                self.val[entry.name] = {d: s for (d, _), s in self.score(entry, self._val_pairs()).items()}
        return {e.name: self.val[e.name] for e in entries}

    def _soups(self, val: dict[str, dict[str, SplitScores]], pairs) -> list[Entry]:
        """Uniform and greedy soups; greedy admits members by the selection metric on source val."""
        self.soups = plan_soups(self.study, self.families, self.hashes, self._val_key())
        metric = self.study.selection.metric
        multi = len(self.study.ingredient_families()) > 1
        entries = []
        for plan in self.soups:
            model_dir = plan.model_dir(self.out)
            built = (model_dir / "config.json").exists()
            if not built or not verified_model(plan.directory(self.out), self.hashes, rebuild=self.rebuild):
                names = [f"{plan.family}/{n}" if multi else n for n in plan.pool]
                individual = [metric_value(val[n], metric) for n in names]

                click.echo(f"soup {plan.name} ({plan.method}) over {len(plan.pool)} ingredients")
                make_soup(plan, self.out, individual, lambda model: self._val_metric(model, pairs))
                record_model_digest(plan.directory(self.out), self.hashes)
            entries.append(Entry(plan.name, "soup", plan.name, model_dir, self.hashes.model(model_dir),
                                 method=f"{plan.method} soup", family=plan.family))  # fmt: skip
        return entries

    def _val_metric(self, model, pairs) -> float:
        """The selection metric of an unsaved model (a greedy soup in the making) on the source val split."""
        scores = {}
        for dataset, split in pairs:
            records = self.loader(dataset, split)
            s, ok = self.store.predictor.score_paths(model, [str(r.path) for r in records], desc="soup on val")
            labels = np.asarray([int(r.label) for r in records])[ok]
            videos = np.asarray([str(r.video_id) for r in records])[ok]
            scores[dataset] = SplitScores(labels, s[ok], videos)
        return metric_value(scores, self.study.selection.metric)

    # ------------------------------------------------------------ phase 2: test scores of every model

    def test_pairs(self) -> list[tuple[str, str]]:
        d = self.study.data
        return [(t, d.test_split) for t in d.test] + [(s, d.test_split) for s in d.sources if s not in d.test]

    def testing(self, entries: list[Entry]) -> dict[str, dict[str, SplitScores]]:
        t0 = time.perf_counter()
        pairs = self.test_pairs()
        test = {}
        for entry in tqdm(entries, desc="score on test sets", unit="model", disable=not self.progress):
            test[entry.name] = {d: s for (d, _), s in self.score(entry, pairs).items()}
        self.hashes.save()
        self.timings["test_s"] = time.perf_counter() - t0
        return test


def check_plan(study: StudyConfig) -> None:
    """Everything that can be refused before the output folder exists: every family (as it is, or as its config
    will train it), every candidate's recipe (methods, parameters, ingredients) and every soup's pool."""
    from study.families import planned_family

    plans = plan_families(study)
    families = {name: planned_family(plan) for name, plan in plans.items() if plan.role == "ingredients"}
    plan_merges(study, families, None)
    plan_soups(study, families, None, "")


# what a refusal raises (the CLI turns each into one Error: line); an interrupt or a crash is not one
REFUSALS = (click.ClickException, ValueError, OSError)


def run_study(
    study: StudyConfig,
    loader: RecordsLoader | None = None,
    progress: bool = True,
    rebuild: bool = True,
    merge_counts: dict[str, int] | None = None,
    extra_timings: dict[str, float] | None = None,
) -> dict:
    """The whole study; returns the study.json document (also written with report.md and the figures).

    ``rebuild=False`` refuses a cache entry that fails its digest instead of rebuilding it. The plan is checked
    before the output folder is created, and a refusal later on removes an output folder this call created (but
    never a trained family in it, nor a folder an earlier run made: those are resumed from). After
    ``--executor slurm`` every result is in the cache already: ``merge_counts`` then says what the jobs merged (as
    a local run would have) and ``extra_timings`` adds the jobs' wall time."""
    from study.freshness import reusable_doc

    doc = reusable_doc(study)  # first: a finished study with the same inputs plans nothing (mergekit not imported)
    if doc is not None:
        click.echo(f"study {study.name} is up to date (same inputs as its run of {doc.get('created')}): reused "
                   f"study.json, report.md and {len(doc.get('figures', []))} figure(s); nothing merged, scored or "
                   "drawn")  # fmt: skip
        return doc
    check_plan(study)
    created = not study.output.exists()
    try:
        return _run_study(study, loader, progress, rebuild, merge_counts, extra_timings)
    except REFUSALS:
        if created and not (study.output / "families").exists():
            import shutil

            shutil.rmtree(study.output, ignore_errors=True)
        raise


def _run_study(study: StudyConfig, loader, progress: bool, rebuild: bool, merge_counts, extra_timings) -> dict:
    from study.config import dump_study
    from study.freshness import inputs_key, output_files, record_outputs
    from study.hashing import write_json_atomic
    from study.report import build_study_json, write_outputs
    from study.tracking import log_study

    start = time.perf_counter()
    study.output.mkdir(parents=True, exist_ok=True)
    resolved = study.output / "study.resolved.yaml"
    if not resolved.is_file() or resolved.read_text() != dump_study(study):
        resolved.write_text(dump_study(study))
    run = StudyRun(study, loader, progress, rebuild)
    run.prepare()
    result = run.validation()
    if merge_counts is not None:
        result.merges = dict(merge_counts)
    test = run.testing(result.entries)
    t0 = time.perf_counter()
    result.proxies |= score_protocols(run, result.entries, transductive_protocols(study))  # after selection
    run.timings["protocols_transductive_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    robustness = run_robustness(run, result, test)
    run.timings["robustness_s"] = time.perf_counter() - t0
    doc = build_study_json(study, run, result, test, robustness)
    run.timings |= extra_timings or {}
    doc["timings_s"] = {**{k: round(v, 2) for k, v in run.timings.items()},
                        "total_s": round(time.perf_counter() - start, 2)}  # fmt: skip
    write_outputs(study, run, result, test, doc)
    write_json_atomic(study.output / "study.json", doc)
    log_study(study, doc)
    # the key of the inputs as this run leaves them: the study itself writes some (merge statistics beside the
    # ingredients), so a key taken before them would never match the next run's
    key = inputs_key(study, run.hashes)
    run.hashes.save()  # after the key: its file hashes are then known to the next run, which writes nothing
    record_outputs(study, key, output_files(study))
    return doc
