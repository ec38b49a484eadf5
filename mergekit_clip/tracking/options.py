"""The tracking flags every long-running command shares (``clip-train``, ``clip-study run``): one definition."""

from __future__ import annotations

from collections.abc import Callable

import click

from mergekit_clip.tracking import TrackingConfig


def tracking_options(command: Callable) -> Callable:
    """``--tensorboard/--no-tensorboard``, ``--mlflow``, ``--mlflow-tracking-uri``, ``--mlflow-experiment``;
    unset flags leave the configuration file's ``tracking:`` section as it is."""
    fields = TrackingConfig.model_fields
    decorators = [
        click.option("--tensorboard/--no-tensorboard", "tensorboard", default=None,
                     help=f"{fields['tensorboard'].description} (default: on)"),
        click.option("--mlflow", "mlflow", is_flag=True, default=None, help=fields["mlflow"].description),
        click.option("--mlflow-tracking-uri", "mlflow_tracking_uri", default=None, metavar="URI",
                     help=f"{fields['mlflow_tracking_uri'].description} (implies --mlflow)"),
        click.option("--mlflow-experiment", "mlflow_experiment", default=None, metavar="NAME",
                     help=f"{fields['mlflow_experiment'].description} (implies --mlflow)"),
    ]  # fmt: skip
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def apply_tracking_options(config: TrackingConfig, **flags) -> TrackingConfig:
    """``config`` with the flags that were given on the command line."""
    update = {k: v for k, v in flags.items() if v is not None}
    if update.get("mlflow_tracking_uri") or update.get("mlflow_experiment"):
        update["mlflow"] = True
    return config.model_copy(update=update) if update else config
