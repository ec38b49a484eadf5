"""``clip-study run STUDY.yml [--set key=value ...] [--dry-run]``: one merging study, end to end.

    clip-study run studies/demo.yml
    clip-study run studies/vit_b16_ff_template.yml --set eval.device=cuda --set merges.ties.grid.density=[0.2,0.5]
    clip-study run studies/demo.yml --dry-run        # the plan as public commands, nothing run
    clip-study run studies/demo.yml --executor slurm # every stage as Slurm jobs (docs/study.md)
    clip-study status studies/demo.yml               # per stage: done / running / failed / missing

Outputs under the study's ``output``: ``report.md``, ``study.json``, ``figures/``, ``study.resolved.yaml``,
``candidates/<group>/<key>/`` (merges and soups) and ``scores/`` (per-frame scores; a rerun reuses them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mergekit_clip.tracking.options import apply_tracking_options, tracking_options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Merging studies: family -> merge search -> selection on source val -> test scores with error bars."""


@main.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a study key (dotted, e.g. eval.device=cuda or merges.ties.grid.density=[0.2,0.5])")
@click.option("--dry-run", is_flag=True, help="print the plan as public commands and write its recipes; run nothing")
@click.option("--executor", type=click.Choice(["local", "slurm", "submitit-local"]), default="local",
              show_default=True, help="local: this process; slurm: every stage as Slurm jobs (the study's executor "
              "section); submitit-local: the same jobs as local processes")  # fmt: skip
@click.option("--quiet", is_flag=True, help="no progress bars")
@click.option(
    "--no-rebuild", is_flag=True, help="refuse a cache entry (merge, scores, statistics) that fails its digest"
)
@tracking_options
def run_command(
    study_file: Path, overrides: tuple[str, ...], dry_run: bool, executor: str, quiet: bool, no_rebuild: bool,
    **tracking,
) -> None:
    """Run STUDY_FILE: every step whose output exists is reused, so a killed or extended study resumes."""
    from mergekit_clip.data.deepfakebench import DatasetError
    from mergekit_clip.detector.io import DetectorFormatError
    from mergekit_clip.recipe import FamilyError, RecipeError
    from study.config import StudyConfigError, load_study

    try:
        study = load_study(study_file, list(overrides))
        study = study.model_copy(update={"tracking": apply_tracking_options(study.tracking, **tracking)})
        if dry_run:
            from study.dryrun import plan_commands

            for line in plan_commands(study, str(study_file)):
                click.echo(line)
            return
        from study.report import print_summary
        from study.runner import run_study
        from train.config import ConfigError

        try:
            if executor == "local":
                doc = run_study(study, progress=not quiet, rebuild=not no_rebuild)
            else:
                from study.jobs.coordinator import run_with_jobs

                doc = run_with_jobs(study, executor, progress=not quiet, rebuild=not no_rebuild)
        except ConfigError as e:
            raise click.ClickException(f"family config: {e}") from e
    except (StudyConfigError, FamilyError, RecipeError, DatasetError, DetectorFormatError) as e:
        raise click.ClickException(str(e)) from e
    print_summary(doc)
    click.echo(f"\nreport: {study.output / 'report.md'}  (every number: {study.output / 'study.json'})")


@main.command("search", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--group", "groups", multiple=True, metavar="GROUP", help="search group(s) to run; default: all")
@click.option("--worker", default=0, show_default=True, type=click.IntRange(min=0),
              help="this worker's index: give each concurrent worker its own (its sampler seed derives from it)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a study key (dotted)")
def search_command(study_file: Path, groups: tuple[str, ...], worker: int, overrides: tuple[str, ...]) -> None:
    """Run trials of STUDY_FILE's Optuna searches until their budgets are met; start several (on one storage,
    e.g. search.storage: postgresql://... or journal:/shared/search.log) to share a search between workers."""
    from mergekit_clip.recipe import FamilyError, RecipeError
    from study.config import StudyConfigError, load_study
    from study.runner import StudyRun
    from study.search import SearchError, run_searches, search_groups

    try:
        study = load_study(study_file, list(overrides))
        known = search_groups(study)
        unknown = [g for g in groups if g not in known]
        if unknown or not known:
            raise StudyConfigError(f"--group {unknown or ''}: the study's search groups are {known or 'none'} "
                                   "(merges.<group>.search)")  # fmt: skip
        run = StudyRun(study, progress=False)
        run.prepare()
        for outcome in run_searches(run, worker, list(groups) or None):
            click.echo(f"{outcome.group}: {len(outcome.candidates)} finished candidates ({outcome.study_name} in "
                       f"{outcome.storage}); this worker: {outcome.counts}")  # fmt: skip
    except (StudyConfigError, FamilyError, RecipeError, SearchError) as e:
        raise click.ClickException(str(e)) from e


@main.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="the overrides the run was given")
@click.option("--executor", type=click.Choice(["slurm", "submitit-local"]), default="slurm", show_default=True,
              help="where the study's jobs run (to ask whether they are alive)")  # fmt: skip
def status_command(study_file: Path, overrides: tuple[str, ...], executor: str) -> None:
    """Every stage of STUDY_FILE: units done / running / failed (with log paths) / missing."""
    from study.config import StudyConfigError, load_study
    from study.jobs.status import print_status

    try:
        study = load_study(study_file, list(overrides))
    except StudyConfigError as e:
        raise click.ClickException(str(e)) from e
    print_status(study, executor)


if __name__ == "__main__":
    sys.exit(main())
