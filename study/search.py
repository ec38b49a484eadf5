"""Optuna search over a merge group's continuous parameters (``merges.<group>.search``), on the chosen protocol.

Every trial is an ordinary content-keyed candidate (:mod:`study.candidates`): its recipe is built by the same code
as a grid point, merged into ``OUT/candidates/<group>/<key>/`` and scored through the score cache, so nothing is
merged or scored twice, whether the trial is resumed, retried or proposed again by another worker.

Optuna's storage records the trials: a SQLite file in the study folder by default, or any URL Optuna accepts (an
RDB such as PostgreSQL, or ``journal:PATH`` for a JournalStorage file), so several processes or machines run one
search at once (``clip-study search STUDY.yml --group G --worker N`` beside ``clip-study run``). The budget is the
number of finished trials over all workers (Optuna's ``MaxTrialsCallback``; concurrent workers may overshoot it by
at most one trial each). A per-key lock file makes a worker wait for a candidate another worker is computing and
then read its cached result.

Resuming: the Optuna study's name hashes the group's recipe inputs, space, protocol and val data, so a rerun of an
unchanged search continues it. A trial that failed or was killed after its merge was written is enqueued once
more with the same parameters (served from the cache); on RDB storages a killed worker's trial turns stale after
its heartbeat stops and is handled the same way. The sampler's seed is ``seed + 7919 * worker + trials so far``:
a single process is reproducible, and a resumed search or a second worker does not replay the same proposals.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergekit_clip.recipe import RecipeError, build_recipe, select_ingredients, validate_recipe
from study.candidates import MergeCandidate, merge_options, run_merges
from study.hashing import canonical_hash, recipe_key
from study.objective import protocol_name, protocol_score
from study.selection import Entry

HEARTBEAT_S = 30  # RDB storages: a trial whose worker stopped beating for 3 x this is failed (then retried)
DECIMALS = 4  # trial parameters are rounded: readable names, and a proposal 1e-5 away is the same candidate


class SearchError(ValueError):
    """A search that cannot run (the message names the group and the key)."""


def storage_url(study, spec) -> str:
    return spec.storage or f"sqlite:///{(study.output / 'search' / 'optuna.db').absolute()}"


def open_storage(url: str):
    """Optuna storage for ``url``: ``journal:PATH`` -> JournalStorage on a file; anything else an RDBStorage with
    heartbeats (stale trials of killed workers are failed, then retried from the cache)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"creator": _sqlite_connection(path)}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4/5: one warning per open otherwise
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
                                          **kwargs)  # fmt: skip


def _sqlite_connection(path: Path):
    """Connections in WAL mode with ``synchronous=NORMAL``: a commit no longer waits for an fsync (Optuna commits
    several times a trial: 0.3 s a trial and 2.5 s to create the schema on a busy disk, against ~0.05 s), still safe
    against a killed process; several workers on one file wait up to 60 s for the lock instead of failing."""

    def connect():
        import sqlite3

        connection = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    return connect


def _alive(owner: str) -> bool:
    try:
        host, pid = owner.split()
    except ValueError:
        return True  # being written: assume alive
    if host != socket.gethostname():
        return True  # another machine's lock: cannot tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


@contextmanager
def key_lock(path: Path, poll_s: float = 0.05) -> Iterator[None]:
    """Hold ``path`` (created exclusively) while computing one candidate; a lock left by a dead local process is
    taken over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = path.read_text()
            except OSError:
                continue  # released meanwhile
            if not _alive(owner):
                path.unlink(missing_ok=True)
                continue
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@dataclass
class SearchOutcome:
    group: str
    study_name: str
    storage: str
    candidates: list[MergeCandidate]  # finished trials, distinct content keys, in trial order
    counts: dict[str, int] = field(default_factory=dict)  # this process: trials, merged, reused, retried


class GroupSearch:
    """One group's search bound to a :class:`~study.runner.StudyRun` (families prepared)."""

    def __init__(self, run, group: str):
        self.run, self.group = run, group
        study = run.study
        self.entry = study.merges[group]
        if self.entry.search is None:
            raise SearchError(f"merges.{group}: has no 'search' section")
        self.spec = self.entry.search
        self.method = self.entry.method or group
        self.family_name = study.family_of(self.entry)
        self.family = run.families[self.family_name]
        self.chosen = select_ingredients(self.family, self.entry.select)
        self.fixed = dict(self.entry.grid)
        self.weight_names = [f"w_{i.name}" for i in self.chosen] if self.spec.weights is not None else []
        clash = sorted(set(self.weight_names) & set(self.spec.space))
        if clash:
            raise SearchError(f"merges.{group}.search.space {clash}: these names are the ingredient weights")
        probe = {**self.fixed, **{k: r.low for k, r in self.spec.space.items()}}
        try:  # every searched name is a parameter of the method (named error otherwise)
            build_recipe(self.method, self.family, self.chosen, {**probe, **({"weight": 1.0} if self.weight_names
                                                                                   else {})})  # fmt: skip
        except RecipeError as e:
            raise SearchError(f"merges.{group}.search: {e}") from e
        kind = study.selection.all_protocols()[study.selection.protocol].kind
        if kind == "held_out_forgery" and self.weight_names:
            raise SearchError(f"merges.{group}.search.weights: the held_out_forgery protocol scores each candidate's "
                              "counterpart on the retrained family, whose ingredients differ: search the method's "
                              "parameters only (space)")  # fmt: skip
        self.storage_url = storage_url(study, self.spec)
        content = {
            "method": self.method, "fixed": self.fixed, "space": self.spec.model_dump(include={"space", "weights"}),
            "ingredients": [run.hashes.model(i.path) for i in self.chosen], "options": merge_options(study),
            "protocol": protocol_name(study), "val": run._val_key(),
        }  # fmt: skip
        self.study_name = f"{group}-{canonical_hash(content, 12)}"
        self.counts = {"trials": 0, "merged": 0, "reused": 0, "retried": 0}

    # ------------------------------------------------------------ trial -> candidate

    def suggest(self, trial) -> dict[str, float]:
        params = {}
        for name, r in self.spec.space.items():
            params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
        for name in self.weight_names:
            w = self.spec.weights
            params[name] = trial.suggest_float(name, w.low, w.high, log=w.log)
        return params

    def candidate(self, params: dict[str, float]) -> MergeCandidate:
        params = {k: round(float(v), DECIMALS) for k, v in params.items()}
        point = {**self.fixed, **{k: params[k] for k in self.spec.space}}
        recipe = build_recipe(self.method, self.family, self.chosen, point, absolute_paths=True)
        for model, name in zip(recipe["models"], self.weight_names):
            model.setdefault("parameters", {})["weight"] = params[name]
        validate_recipe(recipe)
        key = recipe_key(recipe, self.run.hashes, merge_options(self.run.study))
        return MergeCandidate(
            group=self.group, method=self.method, family=self.family_name, params={**self.fixed, **params},
            searched=tuple(params), ingredients=tuple(i.name for i in self.chosen), recipe=recipe, key=key,
        )  # fmt: skip

    def entry_of(self, candidate: MergeCandidate) -> Entry:
        model_dir = candidate.model_dir(self.run.out)
        return Entry(candidate.name, "merge", candidate.group, model_dir, self.run.hashes.model(model_dir),
                     method=candidate.method, params=candidate.params, searched=candidate.searched,
                     family=candidate.family)  # fmt: skip

    def evaluate(self, candidate: MergeCandidate) -> float:
        """Merge (if missing) and score one candidate; one worker at a time per key."""
        lock = self.run.out / "search" / "locks" / f"{candidate.key}.lock"
        with key_lock(lock):
            done = run_merges([candidate], self.run.out, self.run.study, progress=False, hashes=self.run.hashes)
            self.counts["merged"] += done["merged"]
            self.counts["reused"] += done["reused"]
            return protocol_score(self.run, self.entry_of(candidate))

    # ------------------------------------------------------------ the Optuna loop

    def _open(self, worker: int):
        import optuna

        storage = open_storage(self.storage_url)
        existing = 0
        try:
            existing = len(optuna.load_study(study_name=self.study_name, storage=storage).get_trials(deepcopy=False))
        except KeyError:
            pass
        seed = self.spec.seed + 7919 * worker + existing
        sampler = (optuna.samplers.TPESampler(seed=seed) if self.spec.sampler == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))  # fmt: skip
        return optuna.create_study(study_name=self.study_name, storage=storage, sampler=sampler,
                                   direction="maximize", load_if_exists=True)  # fmt: skip

    def _retry_cached_failures(self, ostudy) -> None:
        """Enqueue, once, every failed trial whose candidate was merged before it failed (its result is cached)."""
        from optuna.storages import RDBStorage, fail_stale_trials
        from optuna.trial import TrialState

        if isinstance(ostudy._storage, RDBStorage):
            fail_stale_trials(ostudy)
        trials = ostudy.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            key = t.user_attrs.get("key")
            if t.state != TrialState.FAIL or t.number in retried or key is None:
                continue
            if (self.run.out / "candidates" / self.group / key / "model" / "config.json").exists():
                ostudy.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
                self.counts["retried"] += 1

    def optimize(self, worker: int = 0) -> SearchOutcome:
        """Run trials until the search has its budget of finished trials; returns every finished candidate."""
        import optuna
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # workers starting together would race to create the storage's schema (SQLite: a UNIQUE failure)
        with key_lock(self.run.out / "search" / "locks" / f"{self.study_name}.open.lock"):
            ostudy = self._open(worker)
            self._retry_cached_failures(ostudy)

        def objective(trial) -> float:
            candidate = self.candidate(self.suggest(trial))
            trial.set_user_attr("key", candidate.key)
            score = self.evaluate(candidate)
            self.counts["trials"] += 1
            return score

        finished = len(ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        remaining = self.spec.trials - finished
        if remaining > 0:
            logging.getLogger("optuna").setLevel(logging.WARNING)
            ostudy.optimize(objective, n_trials=remaining,
                            callbacks=[MaxTrialsCallback(self.spec.trials, states=(TrialState.COMPLETE,))])  # fmt: skip
        self.run.hashes.save()
        return SearchOutcome(self.group, self.study_name, self.storage_url, self.finished(ostudy), dict(self.counts))

    def finished(self, ostudy) -> list[MergeCandidate]:
        """The finished trials' candidates, one per content key, merged here if another machine made them."""
        from optuna.trial import TrialState

        out: dict[str, MergeCandidate] = {}
        for t in sorted(ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
            candidate = self.candidate(t.params)
            out.setdefault(candidate.key, candidate)
        candidates = list(out.values())
        run_merges(candidates, self.run.out, self.run.study, progress=False, hashes=self.run.hashes)
        return candidates


def search_groups(study) -> list[str]:
    return [g for g, entry in study.merges.items() if entry.search is not None]


def run_searches(run, worker: int = 0, groups: list[str] | None = None) -> list[SearchOutcome]:
    """Every search group of the study (or ``groups``), one after the other, in this process."""
    return [GroupSearch(run, g).optimize(worker) for g in (groups if groups is not None else search_groups(run.study))]
