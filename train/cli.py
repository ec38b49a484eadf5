"""``clip-train CONFIG.yaml [--set key=value ...] [--resume] [--overwrite]``: train a family of ingredients.

Single process::

    clip-train train/configs/tiny_family.yaml --set output=runs/family

Data-parallel (gloo on CPU, NCCL on GPU; rank 0 writes)::

    torchrun --nproc_per_node 2 -m train train/configs/tiny_family.yaml --set output=runs/family
"""

from __future__ import annotations

from pathlib import Path

import click

from mergekit_clip.data.deepfakebench import DatasetError
from mergekit_clip.detector.io import DetectorFormatError
from mergekit_clip.distributed import env_is_main
from mergekit_clip.tracking.options import apply_tracking_options, tracking_options
from train.config import ConfigError, dump_config, load_config
from train.finetune import CheckpointError
from train.sweep import RunExistsError


class _TrainCommand(click.Command):
    """clip-train's help lists the training modes registered when it is shown (train/modes/), with their papers."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        from train.modes import MODES

        with formatter.section("Modes (sweep.modes)"):
            formatter.write_dl([(name, mode.paper or mode.trains) for name, mode in MODES.items()])


@click.command(cls=_TrainCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a config key (dotted, e.g. optim.epochs=2 or sweep.seeds=[0,1]); repeatable",
)
@click.option("--resume", is_flag=True, help="continue the run in OUTPUT (same config) from its last checkpoint")
@click.option("--overwrite", is_flag=True, help="replace a run already in OUTPUT")
@click.option("--dry-run", is_flag=True, help="print the resolved config and the ingredient names, train nothing")
@tracking_options
def main(
    config_file: Path, overrides: tuple[str, ...], resume: bool, overwrite: bool, dry_run: bool, **tracking
) -> None:
    """Train a family of CLIP detectors over a sweep (modes x datasets x lrs x seeds), plus their shared base.

    Every ingredient is a dense detector folder; the modes are listed below (docs/train.md has their papers)."""
    try:
        config = load_config(config_file, list(overrides))
        config = config.model_copy(update={"tracking": apply_tracking_options(config.tracking, **tracking)})
        if dry_run:
            click.echo(dump_config(config))
            for plan in config.ingredients():
                click.echo(f"{plan.name}: {plan.model_dump(mode='json')}")
            return
        from mergekit_clip.distributed import shutdown
        from train.sweep import run_sweep

        try:
            rows = run_sweep(config, resume=resume, overwrite=overwrite)
        finally:
            shutdown()
    except (ConfigError, DatasetError, DetectorFormatError, RunExistsError, CheckpointError) as e:
        raise click.ClickException(str(e)) from e
    if env_is_main():
        for row in rows:
            h = row["heldout"] or {}
            auc = "n/a" if h.get("auc") is None else f"{h['auc']:.4f}"
            where = f"{h.get('dataset')}/{h.get('split')}"
            click.echo(f"{row['name']}: held-out {where} AUC {auc} ACC {h.get('acc', 0):.4f}")
        click.echo(f"wrote {config.output}/summary.json")


if __name__ == "__main__":
    main()
