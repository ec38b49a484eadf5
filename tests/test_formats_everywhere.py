"""Every registered dataset format works with every command that reads data, and owns the dataset's identity.

For each format in ``mergekit_clip.data.formats.FORMATS`` the same tiny dataset is written in that format and
``clip-train``, ``clip-eval score``, ``mergekit-clip stats`` and a tiny ``clip-study`` run on it. Then one video's
label is flipped in the file: ``clip-train --resume`` refuses the changed data, the study scores the edited dataset
again (its score cache is keyed by the file's digest) and the statistics are no longer fresh.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from formats_support import WRITERS, flipped, json_videos
from study_support import FAMILY_ROWS, make_family
from test_eval_support import make_detectors
from train_support import make_dataset, tiny_config

from mergekit_clip.data.formats import FORMATS, dataset_identity

DATASETS = ("TinyA", "TinyB")


def test_every_format_has_a_writer_here():
    assert set(WRITERS) == set(FORMATS)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("formats")
    for i, name in enumerate(DATASETS):
        make_dataset(root, name, videos={"train": 4, "val": 4, "test": 4}, frames=2, seed=i)
    (detector,) = make_detectors(root / "det", tiny_spec, seeds=(0,))
    make_family(root / "family", tiny_spec, rows=FAMILY_ROWS[1:3], dataset="TinyA")
    return root, detector


@pytest.fixture(params=sorted(FORMATS))
def dataset(request, world, tmp_path):
    """(json root holding TinyA/TinyB in this format, {name: videos}, the format's name)."""
    root, _ = world
    json_root = tmp_path / "json"
    json_root.mkdir()
    videos = {name: json_videos(root / "json", name) for name in DATASETS}
    for name in DATASETS:
        WRITERS[request.param](json_root, name, videos[name])
    return json_root, videos, request.param


def _cli(main, args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_identity_names_the_file_and_its_digest(dataset):
    import hashlib

    json_root, videos, fmt = dataset
    identity = dataset_identity("TinyA", json_root)
    (file,) = identity.files
    assert Path(file) == FORMATS[fmt].source("TinyA", json_root).absolute()
    assert identity.files[file] == hashlib.sha256(Path(file).read_bytes()).hexdigest()
    before = identity.digest
    WRITERS[fmt](json_root, "TinyA", flipped(videos["TinyA"], "test"))
    assert dataset_identity("TinyA", json_root).digest != before


def test_clip_train_reads_it_and_resume_refuses_an_edit(world, dataset, tmp_path, monkeypatch):
    from train.cli import main
    from train.finetune import KILL_ENV, SimulatedKill

    root, _ = world
    json_root, videos, fmt = dataset
    out = tmp_path / "run"
    cfg = tiny_config(root, out, **{"data.json_root": str(json_root), "optim.epochs": 2})
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv(KILL_ENV, "1")
    result = CliRunner().invoke(main, [str(file)])
    monkeypatch.delenv(KILL_ENV)
    assert isinstance(result.exception, SimulatedKill), result.output
    source = WRITERS[fmt](json_root, "TinyA", flipped(videos["TinyA"], "train"))
    result = CliRunner().invoke(main, [str(file), "--resume"])
    assert result.exit_code == 1 and "training data changed" in result.output, result.output
    assert str(source.absolute()) in result.output and "Traceback" not in result.output
    _cli(main, [file, "--overwrite"])
    recorded = json.loads((out / "run_inputs.json").read_text())["dataset_sha256"]
    assert recorded == dataset_identity("TinyA", json_root).files


def test_clip_eval_score_reads_it_and_records_its_digest(world, dataset, tmp_path):
    from eval.cli import main

    root, detector = world
    json_root, _, _ = dataset
    out = tmp_path / "report"
    _cli(main, ["score", detector, "--datasets", "TinyA", "--json-root", json_root, "--data-root", root / "data",
                "--device", "cpu", "--workers", 0, "--out", out])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert dataset_identity("TinyA", json_root).digest in json.dumps(report)


def test_stats_read_it_and_an_edit_makes_them_stale(world, dataset, tmp_path):
    import shutil

    from mergekit_clip.cli import main
    from study.stats import StatsJob, is_fresh

    root, detector = world
    json_root, videos, fmt = dataset
    model = shutil.copytree(detector, tmp_path / "det")
    _cli(main, ["stats", model, "--kind", "gram", "--dataset", "TinyA", "--split", "train", "--json-root", json_root,
                "--data-root", root / "data", "--device", "cpu", "--workers", 0])  # fmt: skip
    job = StatsJob(model, "gram", "TinyA", "train", None, None, "c23", None, json_root)
    assert is_fresh(job)
    WRITERS[fmt](json_root, "TinyA", flipped(videos["TinyA"], "train"))
    assert not is_fresh(job)


def test_data_validate_and_summary_read_it(world, dataset):
    from mergekit_clip.cli import main

    root, _ = world
    json_root, videos, _ = dataset
    out = _cli(main, ["data", "validate", "--json-root", json_root, "--data-root", root / "data"])
    assert out.count("ok: no problems found") == len(DATASETS)
    table = _cli(main, ["data", "summary", "TinyA", "--json-root", json_root])
    fakes = [v for v in videos["TinyA"] if v[0] == "test" and v[2] == "CelebDFv2_fake"]
    rows = [line.split() for line in table.splitlines()]
    assert ["TinyA", "=", "all", "fake", "test", str(len(fakes)), str(2 * len(fakes)), "-"] in rows, table


def test_clip_study_reads_it_and_rescores_an_edited_dataset(world, dataset, tmp_path):
    from study.cli import main

    root, _ = world
    json_root, videos, fmt = dataset
    out = tmp_path / "study"
    study = {
        "name": "formats", "output": str(out),
        "data": {"json_root": str(json_root), "data_root": str(root / "data"), "source": "TinyA", "test": ["TinyB"]},
        "families": {"tiny": {"path": str(root / "family")}},
        "merges": {"linear": {}}, "eval": {"batch_size": 16, "workers": 0, "device": "cpu"},
        "bootstrap": {"n_boot": 10},
    }  # fmt: skip
    file = tmp_path / "study.yml"
    file.write_text(yaml.safe_dump(study))
    _cli(main, ["run", file, "--quiet"])
    scored = {p.name for p in (out / "scores").rglob("*.npz")}
    _cli(main, ["run", file, "--quiet"])
    assert {p.name for p in (out / "scores").rglob("*.npz")} == scored  # nothing new: the cache is used
    WRITERS[fmt](json_root, "TinyB", flipped(videos["TinyB"], "test"))
    _cli(main, ["run", file, "--quiet"])
    new = {p.name for p in (out / "scores").rglob("*.npz")} - scored
    assert new and all(name.startswith("TinyB__test__") for name in new)
