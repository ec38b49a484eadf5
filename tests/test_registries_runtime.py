"""Adding a metric, a training mode, an importer or a dataset format is one registration: a throw-away entry
registered at run time (after every module is imported) shows in ``--help``, passes the config and study file
validation, and reaches the report, with no list elsewhere to edit."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import mergekit_clip.metrics as metrics
from mergekit_clip.metrics import Metric


def _throwaway_score(labels, scores) -> float:
    """Share of fakes scored above 0.5: a metric no one registered before this test."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    return float(np.mean(scores[labels == 1] > 0.5)) if (labels == 1).any() else float("nan")


@pytest.fixture
def throwaway():
    """A metric, a training mode and an importer registered (through each registry's own function) for this test
    only, removed afterwards."""
    from mergekit_clip.convert import IMPORTERS, register_importer
    from train.modes.registry import MODES, TrainingMode, register

    metrics.register(Metric("throwaway_score", _throwaway_score, True, True, "frame", "test-only metric"))
    register(TrainingMode(name="throwaway_mode", prefix="tw", trains="nothing", paper="a test-only mode"))
    register_importer("throwaway-format", lambda source, options: None)
    try:
        yield "throwaway_score", "throwaway_mode", "throwaway-format"
    finally:
        metrics.METRICS.pop("throwaway_score", None)
        MODES.pop("throwaway_mode", None)
        IMPORTERS.pop("throwaway-format", None)


def _help(main, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "-h"])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_runtime_metric_is_a_choice_a_study_metric_and_a_report_column(throwaway, tiny_spec):
    from eval.cli import main as eval_main
    from eval.predict import Predictions
    from eval.report import build_results
    from study.config import SelectionConfig
    from study.scores import SplitScores, metric_value

    metric = throwaway[0]
    assert metric in _help(eval_main, "soup") and metric in metrics.METRIC_NAMES
    assert SelectionConfig(metric=metric).metric == metric
    with pytest.raises(ValueError, match="choose a selection metric from .*throwaway_score"):
        SelectionConfig(metric="eer")  # lower-better: not a selection metric
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.2, 0.7, 0.9, 0.4])
    split = SplitScores(labels, scores, np.array(["a", "b", "c", "d"]))
    assert metric_value({"X": split}, metric) == 0.5  # one of two fakes above 0.5
    pred = Predictions(model="m", dataset="X", paths=["a/0", "b/0", "c/0", "d/0"], labels=labels, scores=scores,
                       ok=np.ones(4, bool), video_ids=["a", "b", "c", "d"], meta={})  # fmt: skip
    report = build_results([pred])
    assert report["results"][0][metric] == 0.5


def test_a_runtime_mode_is_in_the_help_and_the_config(throwaway, tmp_path):
    from train.cli import main as train_main
    from train.config import TrainConfig

    mode = throwaway[1]
    assert mode in _help(train_main) and "a test-only mode" in _help(train_main)
    raw = {"output": str(tmp_path), "data": {"json_root": str(tmp_path), "data_root": str(tmp_path),
                                             "train_dataset": "X"}, "sweep": {"modes": [mode]},
           "backbone": {"width": 64, "layers": 2, "heads": 4, "patch_size": 8, "image_size": 32}}  # fmt: skip
    config = TrainConfig.model_validate(raw)
    assert [p.name.split("_")[0] for p in config.ingredients()] == ["tw"]
    with pytest.raises(ValueError, match="unknown training mode 'nope'.*throwaway_mode"):
        TrainConfig.model_validate({**raw, "sweep": {"modes": ["nope"]}})


def test_a_runtime_importer_is_a_choice(throwaway):
    from mergekit_clip.cli import main

    assert throwaway[2] in _help(main, "import")
