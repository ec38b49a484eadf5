"""What every tracking backend reads from a ``metrics.jsonl`` record: its step and scalars, and flat parameters.

Kept apart from :mod:`mergekit_clip.tracking` so the backends (``tensorboard_events``, ``mlflow_runs``) import these
without importing the package that imports them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_KEYS = {"ingredient", "stage", "epoch", "step", "time", "dataset", "split"}


def scalars(record: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """``(x, {tag: value})`` of a record: every finite number except the locating fields, tagged ``stage/field``.

    Steps are plotted against the optimiser step, epoch records against the step reached at the end of the epoch
    (so loss per step and per epoch share one axis), probe epochs against the epoch, held-out scores at 0.

    >>> scalars({"ingredient": "ft_s0", "stage": "step", "epoch": 1, "step": 3, "loss": 0.5, "lr": 1e-3})
    (3, {'step/loss': 0.5, 'step/lr': 0.001})
    """
    stage = str(record.get("stage", "log"))
    if stage in ("step", "finetune"):
        x = int(record.get("step", 0))
    else:
        x = int(record.get("epoch", 0) or 0)
    values = {}
    for key, value in record.items():
        if key in _KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            values[f"{stage}/{key}"] = float(value)
    return x, values


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested parameters as ``a.b`` keys with scalar values (lists and None as text), as HParams and MLflow want."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
