"""TensorBoard and MLflow receive exactly the records of ``metrics.jsonl`` (read back and compared value by value),
a resumed run's curves hold each point once, and the study's HParams rows and MLflow runs equal study.json."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from mergekit_clip.tracking import Trackers, scalars  # noqa: E402
from tests.train_support import make_dataset, tiny_config  # noqa: E402
from train.cli import main as train_main  # noqa: E402
from train.metrics_log import MetricsLog, read_metrics  # noqa: E402


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected_scalars(records, ingredient: str) -> dict[str, list[tuple[int, float]]]:
    """What the log says, written out independently of :func:`scalars`: stage/field against step or epoch."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.get("ingredient") != ingredient:
            continue
        x = r["step"] if r["stage"] in ("step", "finetune") else r.get("epoch", 0)
        for key, value in r.items():
            if key in ("ingredient", "stage", "epoch", "step", "time", "dataset", "split"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(f"{r['stage']}/{key}", []).append((x, float(value)))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    make_dataset(root, "TinyA")
    cfg = tiny_config(root, root / "run", **{"sweep.modes": ["lp_ft"], "optim.probe_epochs": 3})
    cfg["tracking"] = {"mlflow": True, "mlflow_tracking_uri": (root / "mlruns").as_uri(), "mlflow_experiment": "t"}
    file = root / "cfg.yaml"
    file.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(train_main, [str(file)])
    assert result.exit_code == 0, result.output
    return root


def test_tensorboard_holds_exactly_the_log(trained):
    records = read_metrics(trained / "run" / "metrics.jsonl")
    stages = {r["stage"] for r in records}
    assert {"step", "probe", "finetune", "heldout"} <= stages
    got = tensorboard_scalars(trained / "run" / "tensorboard" / "lpft_s0")
    want = expected_scalars(records, "lpft_s0")
    assert {"step/loss", "step/lr", "finetune/loss", "probe/loss", "heldout/auc"} <= set(want)
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32 events


def test_tensorboard_has_the_ingredient_config_as_text(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained / "run" / "tensorboard" / "lpft_s0"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert any(t.startswith("ingredient") for t in tags) and any(t.startswith("config") for t in tags)
    text = acc.Tensors(next(t for t in tags if t.startswith("ingredient")))[0].tensor_proto.string_val[0].decode()
    assert "mode: lp_ft" in text and "seed: 0" in text


def test_mlflow_holds_exactly_the_log(trained):
    from mergekit_clip.tracking.mlflow_runs import client

    mlflow_client = client((trained / "mlruns").as_uri())
    exp = mlflow_client.get_experiment_by_name("t")
    runs = mlflow_client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == ["lpft_s0"]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["mode"] == "lp_ft" and float(run.data.params["optim.lr"]) == 1e-3
    want = expected_scalars(read_metrics(trained / "run" / "metrics.jsonl"), "lpft_s0")
    for tag, points in want.items():
        history = mlflow_client.get_metric_history(run.info.run_id, tag)
        assert sorted((m.step, m.value) for m in history) == sorted(points), tag


def test_no_tensorboard_flag_writes_no_events(tmp_path):
    make_dataset(tmp_path, "TinyA")
    cfg = tiny_config(tmp_path, tmp_path / "run", **{"optim.epochs": 1})
    file = tmp_path / "cfg.yaml"
    file.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(train_main, [str(file), "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert any(r["stage"] == "step" for r in read_metrics(tmp_path / "run" / "metrics.jsonl"))


class Recorder:
    def __init__(self):
        self.points, self.resets = [], []

    def record(self, record):
        self.points.append(scalars(record))

    def text(self, run, tag, text):
        pass

    def reset(self, run):
        self.resets.append(run)
        self.points.clear()

    def close(self):
        pass


def test_rewind_replays_only_the_kept_lines(tmp_path):
    seen = Recorder()
    log = MetricsLog(tmp_path / "metrics.jsonl", trackers=Trackers([seen]))
    for epoch in (1, 2):
        log.write({"ingredient": "ft_s0", "stage": "step", "epoch": epoch, "step": epoch, "loss": 1.0 / epoch})
        log.write({"ingredient": "ft_s0", "stage": "finetune", "epoch": epoch, "step": epoch, "loss": 0.5 / epoch})
    assert log.rewind("ft_s0", checkpoint_epoch=1) == 2
    assert seen.resets == ["ft_s0"]
    assert seen.points == [(1, {"step/loss": 1.0}), (1, {"finetune/loss": 0.5})]
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 1]


def test_study_hparams_and_mlflow_equal_study_json(tmp_path, tiny_spec):
    from study_support import make_dataset as make_study_dataset
    from study_support import make_family
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from mergekit_clip.tracking.mlflow_runs import client
    from study.config import StudyConfig
    from study.runner import run_study

    make_family(tmp_path / "family", tiny_spec, rows=tiny_rows())
    for i, name in enumerate(["Tiny-FF", "Tiny-A"]):
        make_study_dataset(tmp_path / "json", tmp_path / "data", name, videos=3, frames=2, seed=i)
    uri = (tmp_path / "mlruns").as_uri()
    study = StudyConfig.model_validate({
        "name": "tiny", "output": str(tmp_path / "out"),
        "data": {"json_root": str(tmp_path / "json"), "data_root": str(tmp_path / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-A"]},
        "families": {"tiny": {"path": str(tmp_path / "family")}},
        "merges": {"task_arithmetic": {"grid": {"lambda": [0.5, 1.0]}}},
        "eval": {"batch_size": 16, "workers": 0}, "bootstrap": {"n_boot": 20},
        "tracking": {"mlflow": True, "mlflow_tracking_uri": uri},
    })  # fmt: skip
    doc = run_study(study, progress=False)
    assert "tracking" not in doc["provenance"]["study"]  # where results are shown is not what the study computed
    for name, model in doc["models"].items():
        acc = EventAccumulator(str(tmp_path / "out" / "tensorboard" / name))
        acc.Reload()
        got = acc.Scalars("held_out/frame_auc")[0].value
        assert got == pytest.approx(model["held_out_mean"]["frame"]["estimate"], rel=1e-6)
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["kind"].string_value == model["kind"]
        if model["kind"] == "merge":
            assert hparams["param.lambda"].number_value == model["params"]["lambda"]
    mlflow_client = client(uri)
    runs = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("tiny").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id}
    assert len(parent) == 1 and set(children) == set(doc["models"])
    for name, run in children.items():
        assert run.data.metrics["held_out/frame_auc"] == pytest.approx(
            doc["models"][name]["held_out_mean"]["frame"]["estimate"], abs=1e-12)
    artifacts = {a.path for a in mlflow_client.list_artifacts(parent[0].info.run_id)}
    assert {"report.md", "study.json", "figures"} <= artifacts


def tiny_rows():
    return (("ft_lr1e-3_s0", "full_finetune", 1e-3, 0), ("ft_lr1e-3_s1", "full_finetune", 1e-3, 1))
