"""The docs' tables of registered things match the registries both ways: a training mode, metric or perturbation
registered without its row in the docs fails here, naming it, and so does a row for a name no longer registered
(or a mode's prefix, a perturbation's levels that differ from the registry's)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# documented in the metrics table but computed by the report, not a registered metric
METRIC_ROWS_NOT_REGISTERED = {"group_auc": "per label group of a dataset, its own table and CSV (eval/report.py)"}


def table_rows(doc: str, header: str) -> list[list[str]]:
    """The cells of each row of the table in docs/``doc`` whose header row starts with ``header``."""
    lines = (ROOT / "docs" / doc).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 2 :])
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _compare(what: str, documented: dict, registered: dict) -> list[str]:
    lacking = sorted(registered.keys() - documented.keys())
    stale = sorted(documented.keys() - registered.keys())
    differing = [n for n in sorted(documented.keys() & registered.keys()) if documented[n] != registered[n]]
    return (
        [f"{what} lacks a row for {name}" for name in lacking]
        + [f"{what} has a row for {name}, which is not registered" for name in stale]
        + [f"{what}: {n} is documented as {documented[n]!r}, registered as {registered[n]!r}" for n in differing]
    )


def mode_table_problems() -> list[str]:
    from train.modes import MODES

    documented = {}
    for cells in table_rows("train.md", "| mode (prefix) |"):
        name, prefix = _names(cells[0])
        documented[name] = prefix
    return _compare("docs/train.md's table of modes", documented, {n: m.prefix for n, m in MODES.items()})


def metric_table_problems() -> list[str]:
    from mergekit_clip import metrics

    documented = {name: "" for cells in table_rows("eval.md", "| key | definition |") for name in _names(cells[0])}
    registered = {name: "" for name in (*metrics.METRIC_NAMES, *METRIC_ROWS_NOT_REGISTERED)}
    return _compare("docs/eval.md's table of metrics", documented, registered)


def perturbation_table_problems() -> list[str]:
    from mergekit_clip.data.perturbations import PERTURBATIONS

    documented = {}
    for header in ("| name | alias | follows |", "| name | follows | levels |"):
        for cells in table_rows("eval.md", header):
            documented[_names(cells[0])[0]] = tuple(float(x) for x in cells[-1].split(","))
    registered = {n: tuple(float(x) for x in p.levels) for n, p in PERTURBATIONS.items()}
    return _compare("docs/eval.md's tables of perturbations (name: levels)", documented, registered)


@pytest.mark.parametrize("problems", [mode_table_problems, metric_table_problems, perturbation_table_problems])
def test_docs_table_matches_its_registry(problems):
    assert problems() == []


def test_a_mode_or_metric_registered_without_docs_is_named():
    """Registered at run time through each registry's own function: the checks above name both."""
    from mergekit_clip import metrics
    from mergekit_clip.metrics import Metric
    from train.modes.registry import MODES, TrainingMode, register

    metrics.register(Metric("undocumented_score", lambda y, p: 0.0, True, True, "frame", "test-only metric"))
    register(TrainingMode(name="undocumented_mode", prefix="um", trains="nothing", paper="a test-only mode"))
    try:
        assert metric_table_problems() == ["docs/eval.md's table of metrics lacks a row for undocumented_score"]
        assert mode_table_problems() == ["docs/train.md's table of modes lacks a row for undocumented_mode"]
    finally:
        metrics.METRICS.pop("undocumented_score", None)
        MODES.pop("undocumented_mode", None)
    assert metric_table_problems() == [] and mode_table_problems() == []
