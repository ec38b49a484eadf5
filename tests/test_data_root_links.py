"""Data roots as labs lay them out: ``datasets/TinyA -> /shared/storage/TinyA``.

Symlinks inside the data root are followed by default (every format, every command); lexical escapes (absolute
paths, ``..`` above the root) stay refused; ``--no-follow-symlinks`` / ``data.follow_symlinks: false`` is the strict
mode, and a study file passes it to every stage.
"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from formats_support import WRITERS, json_videos
from train_support import make_dataset, tiny_config

from mergekit_clip.data.deepfakebench import DatasetError
from mergekit_clip.data.formats import FORMATS, load_frames


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    """``root/data/TinyA`` is a link to ``root/storage/TinyA`` (the frames live outside the data root)."""
    root = tmp_path_factory.mktemp("linked")
    make_dataset(root / "storage_build", "TinyA", videos={"train": 4, "val": 2, "test": 2}, frames=2)
    (root / "storage_build" / "data").rename(root / "storage")
    (root / "data").mkdir()
    (root / "data" / "TinyA").symlink_to(root / "storage" / "TinyA", target_is_directory=True)
    videos = json_videos(root / "storage_build" / "json", "TinyA")
    for fmt in FORMATS:
        (root / fmt).mkdir()
        WRITERS[fmt](root / fmt, "TinyA", videos)
    return root


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_links_inside_the_root_are_followed_and_strict_mode_refuses_them(linked, fmt):
    records = load_frames("TinyA", "test", json_root=linked / fmt, data_root=linked / "data")
    assert records and all(r.path.is_relative_to(linked / "data" / "TinyA") and r.path.is_file() for r in records)
    with pytest.raises(DatasetError, match=r"resolves \(through a symlink\) to .*storage.*--no-follow-symlinks"):
        load_frames("TinyA", "test", json_root=linked / fmt, data_root=linked / "data", follow_symlinks=False)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_lexical_escapes_stay_refused_when_links_are_followed(linked, tmp_path, fmt):
    videos = json_videos(linked / "storage_build" / "json", "TinyA")
    split, vid, label, frames = videos[-1]
    for bad, why in (("TinyA/../../storage/x/0.png", "climbs above the data root"), ("/etc/x/0.png", "absolute")):
        WRITERS[fmt](tmp_path, "TinyA", [*videos[:-1], (split, vid, label, [bad])])
        with pytest.raises(DatasetError, match=why):
            load_frames("TinyA", split, json_root=tmp_path, data_root=linked / "data")


def test_dotdot_after_a_link_never_reaches_the_file_system(linked, tmp_path):
    """``TinyA/../TinyB/0.png`` is ``TinyB/0.png`` under the root, not ``storage/TinyB/0.png`` through the link."""
    videos = json_videos(linked / "storage_build" / "json", "TinyA")
    split, vid, label, frames = videos[-1]
    WRITERS["deepfakebench"](tmp_path, "TinyA", [(split, vid, label, ["TinyA\\..\\TinyB\\0.png"])])
    (record,) = load_frames("TinyA", split, json_root=tmp_path, data_root=linked / "data")
    assert record.path == linked / "data" / "TinyB" / "0.png"


def _commands(linked, tmp_path, spec):
    """(command, args) pairs reading TinyA through the link with each public CLI."""
    from test_eval_support import make_detectors

    from eval.cli import main as eval_main
    from mergekit_clip.cli import main as mk_main

    data = ["--json-root", linked / "deepfakebench", "--data-root", linked / "data"]
    (det,) = make_detectors(tmp_path, spec, seeds=(0,))
    return {
        "data validate": (mk_main, ["data", "validate", "TinyA", *data]),
        "clip-eval score": (eval_main, ["score", det, "--datasets", "TinyA", *data, "--device", "cpu", "--workers", 0,
                                        "--out", tmp_path / "report", "--overwrite"]),  # fmt: skip
        "mergekit-clip stats": (mk_main, ["stats", det, "--kind", "gram", "--dataset", "TinyA", "--split", "train",
                                          *data, "--device", "cpu", "--workers", 0]),  # fmt: skip
    }


def test_every_cli_follows_links_by_default_and_refuses_them_in_strict_mode(linked, tmp_path, tiny_spec):
    for name, (main, args) in _commands(linked, tmp_path, tiny_spec).items():
        args = [str(a) for a in args]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (name, result.output)
        strict = CliRunner().invoke(main, [*args, "--no-follow-symlinks"])
        assert strict.exit_code == 1 and "symlink" in strict.output, (name, strict.output)
        assert "Traceback" not in strict.output


@pytest.mark.parametrize("follow", [True, False])
def test_clip_train_follows_links_unless_told_not_to(linked, tmp_path, follow):
    from train.cli import main

    cfg = tiny_config(linked, tmp_path / "run", **{"data.json_root": str(linked / "deepfakebench"),
                                                    "data.follow_symlinks": follow, "optim.epochs": 1})  # fmt: skip
    cfg["sweep"] = {"modes": ["linear_probe"], "seeds": [0]}
    cfg["data"]["val_split"] = "val"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(main, [str(tmp_path / "run.yaml")])
    if follow:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1 and "symlink" in result.output and result.output.count("Error:") == 1
        assert not (tmp_path / "run").exists()


def test_a_study_file_passes_the_strict_mode_to_every_stage(linked, tmp_path, tiny_spec):
    from study_support import make_family

    from study.config import StudyConfig
    from study.dryrun import plan_commands
    from study.families import plan_families
    from study.scores import records_loader

    make_family(tmp_path / "family", tiny_spec, dataset="TinyA")
    raw = {
        "name": "links", "output": str(tmp_path / "out"),
        "data": {"json_root": str(linked / "deepfakebench"), "data_root": str(linked / "data"), "source": "TinyA",
                 "test": ["TinyA"], "follow_symlinks": False},
        "families": {"tiny": {"path": str(tmp_path / "family")},
                     "trained": {"config": str(tmp_path / "train.yaml"), "role": "backbone"}},
        "merges": {"regmean": {}}, "soups": {"greedy": {}},
    }  # fmt: skip
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(tiny_config(linked, tmp_path / "unused")))
    study = StudyConfig.model_validate(raw)
    with pytest.raises(DatasetError, match="symlink"):
        records_loader(study.data)("TinyA", "val")
    assert records_loader(StudyConfig.model_validate(
        {**raw, "data": {**raw["data"], "follow_symlinks": True}}).data)("TinyA", "val")  # fmt: skip
    assert "data.follow_symlinks=False" in plan_families(study)["trained"].train_overrides
    lines = [line for line in plan_commands(study) if line.startswith(("mergekit-clip stats", "clip-eval"))]
    assert {line.split()[0] + " " + line.split()[1] for line in lines} >= {"mergekit-clip stats", "clip-eval soup"}
    assert all("--no-follow-symlinks" in line for line in lines), lines
    assert json.dumps(study.data.root_options()) == '{"allow_outside_root": false, "follow_symlinks": false}'
