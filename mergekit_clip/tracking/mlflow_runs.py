"""MLflow backend (optional extra ``mergekit-clip[mlflow]``): one MLflow run per ingredient, parameters from its
configuration, metrics from the log records, and :func:`log_study` for a study (a parent run with the report,
figures and study.json as artefacts, one nested run per candidate).

MLflow 3 keeps its ``./mlruns`` file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is
set; we set it (only when the URI is a file store) because a file store needs no server and is what a laptop run
wants. Any URI MLflow accepts (``sqlite:///mlflow.db``, ``http://host:5000``) works as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mergekit_clip.tracking.records import flat_params, scalars

KEY_TAG = "mergekit_clip.run"


def client(uri: str | None):
    try:
        from mlflow import MlflowClient
    except ImportError as e:  # a clear line instead of a traceback deep in the training loop
        raise RuntimeError("tracking.mlflow needs MLflow: pip install 'mergekit-clip[mlflow]'") from e
    if uri is None:
        uri = Path("mlruns").absolute().as_uri()
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, name: str) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else mlflow_client.create_experiment(name)


def _log_params(mlflow_client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    flat = [Param(k, str(v)[:6000]) for k, v in flat_params(params).items()]
    for i in range(0, len(flat), 100):  # MLflow's batch limit
        mlflow_client.log_batch(run_id, params=flat[i : i + 100])


def _log_metrics(mlflow_client, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k.replace("@", "_at_"), float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(batch), 1000):
        mlflow_client.log_batch(run_id, metrics=batch[i : i + 1000])


class MlflowTracker:
    def __init__(self, uri: str | None, experiment: str):
        self.client = client(uri)
        self.experiment = experiment_id(self.client, experiment)
        self.runs: dict[str, str] = {}

    def _run(self, name: str) -> str:
        if name not in self.runs:
            run = self.client.create_run(self.experiment, run_name=name, tags={KEY_TAG: name})
            self.runs[name] = run.info.run_id
        return self.runs[name]

    def record(self, record: Mapping[str, Any]) -> None:
        x, values = scalars(record)
        if values:
            _log_metrics(self.client, self._run(str(record.get("ingredient") or "run")), values, step=x)

    def text(self, run: str, tag: str, text: str) -> None:
        import yaml

        run_id = self._run(run)
        self.client.log_text(run_id, text, f"{tag}.yaml")
        try:
            params = yaml.safe_load(text)
        except yaml.YAMLError:
            return
        if isinstance(params, Mapping):
            _log_params(self.client, run_id, params)

    def reset(self, run: str) -> None:
        """Delete the ingredient's runs (this process's and a killed one's) before its lines are replayed."""
        self.runs.pop(run, None)
        for old in self.client.search_runs([self.experiment], filter_string=f"tags.`{KEY_TAG}` = '{run}'"):
            self.client.delete_run(old.info.run_id)

    def close(self) -> None:
        for run_id in self.runs.values():
            self.client.set_terminated(run_id)
        self.runs.clear()


def log_study(
    uri: str | None,
    experiment: str,
    study_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    candidates: Mapping[str, tuple[Mapping[str, Any], Mapping[str, float]]],
    artifacts: list[Path],
) -> str:
    """A parent run for the study, one nested run per candidate; returns the parent's run id."""
    mlflow_client = client(uri)
    exp = experiment_id(mlflow_client, experiment)
    parent = mlflow_client.create_run(exp, run_name=study_name, tags={KEY_TAG: study_name}).info.run_id
    _log_params(mlflow_client, parent, params)
    _log_metrics(mlflow_client, parent, {k: v for k, v in metrics.items() if v is not None})
    for path in artifacts:
        if path.is_dir():
            mlflow_client.log_artifacts(parent, str(path), artifact_path=path.name)
        elif path.is_file():
            mlflow_client.log_artifact(parent, str(path))
    for name, (cand_params, cand_metrics) in candidates.items():
        tags = {"mlflow.parentRunId": parent, KEY_TAG: f"{study_name}/{name}"}
        child = mlflow_client.create_run(exp, run_name=name, tags=tags).info.run_id
        _log_params(mlflow_client, child, cand_params)
        _log_metrics(mlflow_client, child, {k: v for k, v in cand_metrics.items() if v is not None})
        mlflow_client.set_terminated(child)
    mlflow_client.set_terminated(parent)
    return parent
