"""``clip-study status FILE``: per stage, how many units are done, running, failed (with logs) or missing.

Done is what the cache holds; running and failed come from the job book (``OUT/jobs/book.json``) and the
scheduler. A stage whose inputs are not there yet is shown as waiting, with the jobs the book has for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from study.jobs.backends import make_backend
from study.jobs.config import STAGES
from study.jobs.coordinator import JobBook, jobs_dir
from study.jobs.stages import NotReady, Planner


@dataclass
class StageStatus:
    stage: str
    done: int = 0
    running: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (unit label, job id, log)
    missing: int = 0
    waiting: str | None = None  # why the stage cannot be planned yet


def stage_status(study, kind: str = "slurm") -> list[StageStatus]:
    from study.runner import StudyRun

    run = StudyRun(study, progress=False)
    planner = Planner(run)
    book = JobBook(jobs_dir(study) / "book.json")
    backend = make_backend(kind)
    known = [e["job_id"] for stage in book.data.values() for e in stage.values() if e.get("executor") == kind]
    try:
        alive = backend.active(sorted(set(known)))
    except Exception:  # noqa: BLE001 - no scheduler here: nothing counts as running
        alive = set()
    rows = []
    for stage in STAGES:
        row = StageStatus(stage)
        try:
            units = getattr(planner, stage)()
        except NotReady as e:
            row.waiting = str(e)
            units = []
        for unit in units:
            entry = book.get(stage, unit.key)
            if unit.done():
                row.done += 1
            elif entry and entry.get("executor") == kind and entry["job_id"] in alive:
                row.running += 1
            elif entry:
                row.failed.append((unit.label, entry["job_id"], entry["stderr"]))
            else:
                row.missing += 1
        rows.append(row)
    return rows


def print_status(study, kind: str = "slurm") -> None:
    rows = stage_status(study, kind)
    click.echo(f"{'stage':<12}{'done':>6}{'running':>9}{'failed':>8}{'missing':>9}")
    for r in rows:
        note = f"  (waiting: {r.waiting})" if r.waiting else ""
        click.echo(f"{r.stage:<12}{r.done:>6}{r.running:>9}{len(r.failed):>8}{r.missing:>9}{note}")
    for r in rows:
        for label, job_id, log in r.failed:
            click.echo(f"failed: {r.stage}: {label}: job {job_id}, log {log}")
