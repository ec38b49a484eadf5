"""``clip-study run FILE --executor slurm|submitit-local``: every stage as jobs, results only through the cache.

The coordinator walks the stages in order (synth, train, stats, merge, val, soups, test, robustness). For each it
plans the work units (:mod:`study.jobs.stages`), skips those the cache already holds, re-attaches to units whose
job (kept in ``OUT/jobs/book.json``) is still pending or running, submits the rest in jobs of ``per_job`` units,
and waits with one progress bar per stage. A job that ends with units undone (failed, cancelled, pre-empted,
out of time) is submitted again, up to ``executor.max_attempts``, and its log is named. When every stage is done
the local run (:func:`study.runner.run_study`) finds every result in the cache and only selects, bootstraps and
reports, so ``study.json`` is the local run's.

One coordinator per study at a time: ``OUT/jobs/coordinator.lock`` (``flock``); a second one is refused. A killed
coordinator leaves its jobs running; the next one attaches to them and submits nothing twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from tqdm import tqdm

from study.hashing import write_json_atomic
from study.jobs.backends import Backend, make_backend
from study.jobs.stages import Planner, Unit, part_folder
from study.jobs.work import run_units


class StudyJobsError(click.ClickException):
    """A stage could not finish: the message names the units and their logs."""


def jobs_dir(study) -> Path:
    return study.output / "jobs"


class JobBook:
    """``OUT/jobs/book.json``: per stage, per unit key, the unit's last job (id, logs) and its submissions so far."""

    def __init__(self, file: Path):
        self.file = file
        self.data: dict[str, dict[str, dict]] = json.loads(file.read_text()) if file.exists() else {}

    def get(self, stage: str, key: str) -> dict | None:
        return self.data.get(stage, {}).get(key)

    def record(self, stage: str, units: list[Unit], submitted, kind: str) -> None:
        for unit in units:
            old = self.get(stage, unit.key) or {}
            self.data.setdefault(stage, {})[unit.key] = {
                "label": unit.label, "job_id": submitted.job_id, "executor": kind,
                "attempts": old.get("attempts", 0) + 1, "stdout": submitted.stdout, "stderr": submitted.stderr,
            }  # fmt: skip
        write_json_atomic(self.file, self.data)

    def submitted_jobs(self) -> int:
        """Distinct job ids ever recorded (a job of several units counts once)."""
        return len({(e["job_id"], e.get("executor")) for stage in self.data.values() for e in stage.values()})


@contextmanager
def coordinator_lock(study) -> Iterator[None]:
    """Hold ``OUT/jobs/coordinator.lock``; refuse when another coordinator holds it."""
    folder = jobs_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "coordinator.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StudyJobsError(
            f"{path}: another clip-study coordinator runs this study ({holder}); "
            "wait for it, or stop it and run again (it re-attaches to the jobs)"
        ) from None
    try:
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class Coordinator:
    def __init__(self, study, backend: Backend, progress: bool = True):
        from study.runner import StudyRun

        self.study, self.backend, self.progress = study, backend, progress
        self.run = StudyRun(study, progress=False)
        self.planner = Planner(self.run)
        self.book = JobBook(jobs_dir(study) / "book.json")
        self.submitted = 0  # jobs this coordinator submitted

    def stage(self, stage: str, units: list[Unit]) -> None:
        """Run ``units`` of ``stage`` to completion: attach, submit, wait, resubmit."""
        cfg = self.study.executor
        resources = cfg.resources(stage)
        todo = [u for u in units if not u.done()]
        if not todo:
            return
        bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=f"{stage} jobs", unit="unit",
                   disable=not self.progress)  # fmt: skip
        running: dict[str, list[Unit]] = {}  # job id -> its undone units
        waiting: list[Unit] = []
        recorded = [(u, self.book.get(stage, u.key)) for u in todo]
        known = {e["job_id"] for _, e in recorded if e and e.get("executor") == self.backend.kind}
        alive = self.backend.active(sorted(known))
        for unit, entry in recorded:
            if entry and entry.get("executor") == self.backend.kind and entry["job_id"] in alive:
                running.setdefault(entry["job_id"], []).append(unit)  # re-attach
            else:
                waiting.append(unit)
        if running:
            click.echo(f"{stage}: attached to {len(running)} running job(s) of an earlier coordinator")
        limit = resources.array_parallelism if self.backend.kind != "slurm" else None
        try:
            while running or waiting:
                if waiting and (limit is None or len(running) < limit):
                    room = len(waiting) if limit is None else (limit - len(running)) * resources.per_job
                    batch, waiting = waiting[:room], waiting[room:]
                    self._submit(stage, batch, resources, running)
                    continue
                time.sleep(cfg.poll_s)
                alive = self.backend.active(list(running))
                for job_id in [j for j in running if j not in alive]:
                    undone = [u for u in running.pop(job_id) if not u.done()]
                    if undone:
                        waiting += self._failed(stage, job_id, undone)
                bar.n = sum(1 for u in units if u.done())
                bar.refresh()
        finally:
            bar.close()

    def _submit(self, stage: str, units: list[Unit], resources, running: dict) -> None:
        per_job = resources.per_job
        chunks = [units[i : i + per_job] for i in range(0, len(units), per_job)]
        folder = jobs_dir(self.study) / "logs" / stage
        name = f"{self.study.name}-{stage}"
        args = [(self.study, stage, [u.payload for u in chunk]) for chunk in chunks]
        submitted = self.backend.submit(run_units, args, resources, name, folder)
        for chunk, job in zip(chunks, submitted):
            self.book.record(stage, chunk, job, self.backend.kind)
            running[job.job_id] = list(chunk)
        self.submitted += len(submitted)

    def _failed(self, stage: str, job_id: str, undone: list[Unit]) -> list[Unit]:
        """Units of a finished job that left them undone: to resubmit, or the study stops naming the logs."""
        entry = self.book.get(stage, undone[0].key)
        state = self.backend.state(job_id)
        attempts = min(self.book.get(stage, u.key)["attempts"] for u in undone)
        names = ", ".join(u.label for u in undone[:3]) + (f" (+{len(undone) - 3})" if len(undone) > 3 else "")
        if attempts >= self.study.executor.max_attempts:
            raise StudyJobsError(f"{stage}: job {job_id} ended {state} with {names} undone after {attempts} "
                                 f"submission(s) (executor.max_attempts); log: {entry['stderr']}")  # fmt: skip
        click.echo(
            f"{stage}: job {job_id} ended {state} with {names} undone; submitting again "
            f"({attempts + 1}/{self.study.executor.max_attempts}); log: {entry['stderr']}",
            err=True,
        )
        return undone

    # ------------------------------------------------------------ the stages in order

    def train(self) -> None:
        from train.sweep import assemble_parts

        while True:
            ready = self.planner.ready_families()
            if not ready:
                return
            units = [u for u in self.planner.train() if u.group in ready]
            self.stage("train", units)
            for name in ready:
                plan = self.run.family_plans[name]
                config = plan.train_config()
                parts = {i.name: part_folder(self.study, name, i.name) for i in config.ingredients()}
                assemble_parts(config, parts)
                click.echo(f"family {name}: {len(parts)} ingredients trained by jobs -> {plan.output}")

    def run_all(self) -> dict[str, int]:
        """Every stage; returns the merge counts as the local run reports them (found before / merged now)."""
        self.stage("synth", self.planner.synth())
        self.train()
        self.stage("stats", self.planner.stats())
        self.run.hashes.save()
        merges = self.planner.merge()
        counts = {"reused": sum(1 for u in merges if u.done())}
        self.stage("merge", merges)
        counts["merged"] = len(merges) - counts["reused"]
        self.stage("val", self.planner.val())
        self.stage("soups", self.planner.soups())
        self.stage("test", self.planner.test())
        self.stage("robustness", self.planner.robustness())
        self.run.hashes.save()
        return counts


def run_with_jobs(study, kind: str, progress: bool = True, rebuild: bool = True) -> dict:
    """The study with every stage as jobs on ``kind``; returns study.json as :func:`run_study` does."""
    from study.config import dump_study
    from study.runner import run_study

    start = time.perf_counter()
    study.output.mkdir(parents=True, exist_ok=True)
    with coordinator_lock(study):
        (study.output / "study.resolved.yaml").write_text(dump_study(study))
        coordinator = Coordinator(study, make_backend(kind), progress)
        counts = coordinator.run_all()
        jobs_s = time.perf_counter() - start
        click.echo(f"jobs: {coordinator.submitted} submitted by this coordinator ({coordinator.book.submitted_jobs()}"
                   f" in the study's book), {jobs_s:.1f} s")  # fmt: skip
        doc = run_study(study, progress=progress, rebuild=rebuild, merge_counts=counts,
                        extra_timings={"jobs_s": jobs_s})
    return doc
