"""Experiment trackers: TensorBoard (on by default) and MLflow (optional), fed from the records we already keep.

``clip-train`` writes every measurement once, as a line of ``metrics.jsonl``; :class:`Trackers` receives the same
records and hands them to each enabled backend, so TensorBoard and MLflow show exactly what the log holds (nothing is
measured twice). A record is a flat dict with ``ingredient`` (the run it belongs to), ``stage`` (``step``, ``probe``,
``finetune``, ``heldout``) and numbers; :func:`scalars` decides which of its fields are curves and their x value.

A resumed run first rewinds its log (:meth:`train.metrics_log.MetricsLog.rewind`); the trackers then :meth:`reset`
the ingredient and replay the kept lines, so a resumed run's curves hold each point once, as the log does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from mergekit_clip.tracking.records import flat_params, scalars  # noqa: F401  (the backends' shared readers)

# fields of a record that locate it rather than measure something


class TrackingConfig(BaseModel):
    """Where curves and runs go (``tracking:`` in a training config or a study file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensorboard: bool = Field(True, description="write TensorBoard event files under OUT/tensorboard/")
    mlflow: bool = Field(False, description="log runs to MLflow (pip install 'mergekit-clip[mlflow]')")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; None = MLflow's own default, a ./mlruns file store"
    )
    mlflow_experiment: str | None = Field(None, description="MLflow experiment name; None = the run folder's name")


class Tracker(Protocol):
    """One backend. ``record`` gets every metrics line; ``text`` a named document of a run."""

    def record(self, record: Mapping[str, Any]) -> None: ...

    def text(self, run: str, tag: str, text: str) -> None: ...

    def reset(self, run: str) -> None: ...

    def close(self) -> None: ...


class Trackers:
    """The enabled backends as one; a disabled or empty set costs nothing."""

    def __init__(self, backends: Iterable[Tracker] = ()):
        self.backends = list(backends)

    def __bool__(self) -> bool:
        return bool(self.backends)

    def record(self, record: Mapping[str, Any]) -> None:
        for b in self.backends:
            b.record(record)

    def text(self, run: str, tag: str, text: str) -> None:
        for b in self.backends:
            b.text(run, tag, text)

    def replay(self, run: str, records: Iterable[Mapping[str, Any]]) -> None:
        """Forget ``run`` and log ``records`` (its kept log lines) again: the resume path."""
        for b in self.backends:
            b.reset(run)
        for r in records:
            if r.get("ingredient") == run:
                self.record(r)

    def close(self) -> None:
        for b in self.backends:
            b.close()


def open_trackers(config: TrackingConfig, folder: Path, *, experiment: str, enabled: bool = True) -> Trackers:
    """The backends ``config`` asks for, writing under ``folder`` (TensorBoard) or to the MLflow URI."""
    if not enabled:
        return Trackers()
    backends: list[Tracker] = []
    if config.tensorboard:
        from mergekit_clip.tracking.tensorboard_events import TensorBoardTracker

        backends.append(TensorBoardTracker(Path(folder) / "tensorboard"))
    if config.mlflow:
        from mergekit_clip.tracking.mlflow_runs import MlflowTracker

        backends.append(MlflowTracker(config.mlflow_tracking_uri, config.mlflow_experiment or experiment))
    return Trackers(backends)
