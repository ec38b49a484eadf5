"""Validator and summary: every finding on hand-written fixtures, CLI exit codes and counts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mergekit_clip.data.cli import data
from mergekit_clip.data.validate import summarize, validate_dataset


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), 100, np.uint8))


def _video(root: Path, rel_dir: str, label: str, names: list[str], write: bool = True) -> dict:
    frames = [f"{rel_dir}/{n}.png" for n in names]
    if write:
        for f in frames:
            _png(root / f)
    return {"label": label, "frames": frames}


def _good(tmp_path: Path) -> tuple[Path, Path, dict]:
    data_root, json_root = tmp_path / "data", tmp_path / "json"
    json_root.mkdir()
    doc = {
        "UADFV_Real": {
            "train": {"r0": _video(data_root, "U/real/r0", "UADFV_Real", ["0", "1"])},
            "val": {"r1": _video(data_root, "U/real/r1", "UADFV_Real", ["0"])},
            "test": {"r2": _video(data_root, "U/real/r2", "UADFV_Real", ["0", "5", "10"])},
        },
        "UADFV_Fake": {
            "train": {"f0": _video(data_root, "U/fake/f0", "UADFV_Fake", ["0"])},
            "val": {"f1": _video(data_root, "U/fake/f1", "UADFV_Fake", ["3"])},
            "test": {"f2": _video(data_root, "U/fake/f2", "UADFV_Fake", ["7", "8"])},
        },
    }
    return json_root, data_root, doc


def _save(json_root: Path, doc: dict, name: str = "UADFV") -> None:
    (json_root / f"{name}.json").write_text(json.dumps({name: doc}))


def _run(json_root: Path, data_root: Path, **kw):
    return validate_dataset("UADFV", json_root=json_root, data_root=data_root, progress=False, **kw)


def test_clean_dataset_has_no_findings(tmp_path):
    json_root, data_root, doc = _good(tmp_path)
    _save(json_root, doc)
    report = _run(json_root, data_root)
    masks = report.findings.pop("missing_mask")  # no 'frames' folder, so no masks: a note, not a problem
    assert report.findings == {} and masks.severity == "note" and masks.count == 4
    result = CliRunner().invoke(data, ["validate", "--json-root", str(json_root), "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    assert "ok: no problems found" in result.output


def test_missing_and_unreadable_frames(tmp_path):
    json_root, data_root, doc = _good(tmp_path)
    doc["UADFV_Real"]["test"]["r3"] = _video(data_root, "U/real/r3", "UADFV_Real", ["0", "1", "2"], write=False)
    (data_root / "U/fake/f2/8.png").write_bytes(b"not a png")
    (data_root / "U/real/r0/1.png").write_bytes(b"")
    _save(json_root, doc)
    report = _run(json_root, data_root)
    missing, bad = report.findings["missing_frame"], report.findings["unreadable_frame"]
    assert missing.count == 3 and missing.severity == "error"
    assert missing.examples[0].startswith("U/real/r3/0.png -> ")
    assert bad.count == 2 and {Path(e).name for e in bad.examples} == {"8.png", "1.png"}
    exists_only = _run(json_root, data_root, check_images="exists")
    assert "unreadable_frame" not in exists_only.findings and exists_only.findings["missing_frame"].count == 3


def test_unknown_labels_empty_split_and_non_integer_names(tmp_path):
    json_root, data_root, doc = _good(tmp_path)
    doc["UADFV_Fake"]["train"]["f9"] = _video(data_root, "U/fake/f9", "UADFV_Faek", ["0"])
    doc["UADFV_Fake"]["train"]["f8"] = _video(data_root, "U/fake/f8", "Mystery", ["0"])
    doc["UADFV_Real"]["train"]["r9"] = _video(data_root, "U/real/r9", "UADFV_Real", ["frame_01", "2", "x3"])
    del doc["UADFV_Real"]["val"], doc["UADFV_Fake"]["val"]
    _save(json_root, doc)
    report = _run(json_root, data_root)
    assert report.findings["unknown_label"].count == 2
    assert any("'UADFV_Faek'" in e for e in report.findings["unknown_label"].examples)
    assert report.findings["empty_split"].examples == ["UADFV/val"]
    assert report.findings["non_integer_frame"].count == 2
    assert {e.rsplit("/", 1)[1] for e in report.findings["non_integer_frame"].examples} == {"frame_01.png", "x3.png"}
    result = CliRunner().invoke(data, ["validate", "UADFV", "--json-root", str(json_root), "--data-root",
                                       str(data_root)])  # fmt: skip
    assert result.exit_code == 1
    for kind in ("unknown_label: 2", "empty_split: 1", "non_integer_frame: 2"):
        assert kind in result.output


def test_train_test_overlap_warns_unless_strict(tmp_path):
    json_root, data_root, doc = _good(tmp_path)
    doc["UADFV_Real"]["test"]["r0"] = doc["UADFV_Real"]["train"]["r0"]  # UADFV-style reuse
    _save(json_root, doc)
    report = _run(json_root, data_root)
    overlap = report.findings["train_test_overlap"]
    assert overlap.severity == "warning" and overlap.examples == ["U/real/r0"] and not report.errors
    assert _run(json_root, data_root, strict=True).findings["train_test_overlap"].severity == "error"
    args = ["validate", "--json-root", str(json_root), "--data-root", str(data_root)]
    assert CliRunner().invoke(data, args).exit_code == 0
    assert CliRunner().invoke(data, [*args, "--overlap-is-error"]).exit_code == 1


def test_val_equals_test_note_and_broken_json(tmp_path):
    json_root, data_root, doc = _good(tmp_path)
    for group in doc.values():
        group["val"] = group["test"]
    _save(json_root, doc)
    report = _run(json_root, data_root)
    assert report.findings["val_equals_test"].severity == "note" and not report.errors
    (json_root / "UADFV.json").write_text("{not json")
    broken = _run(json_root, data_root)
    assert broken.findings["json"].severity == "error" and "UADFV.json" in broken.findings["json"].examples[0]


def test_summary_counts(tmp_path):
    json_root, data_root, doc = _good(tmp_path)
    _save(json_root, doc)
    report = _run(json_root, data_root, check_images="none")
    stats = {k: (v.videos, v.frames) for k, v in report.stats.items()}
    assert stats[("UADFV_Real", "UADFV_Real", "test")] == (1, 3)
    assert stats[("UADFV_Fake", "UADFV_Fake", "test")] == (1, 2)
    table = summarize([report])
    assert any(line.split() == ["UADFV", "=", "all", "real", "train", "1", "2", "0"] for line in table.splitlines())
    result = CliRunner().invoke(data, ["summary", "--json-root", str(json_root)])
    assert result.exit_code == 0 and "UADFV_Real (real)" in result.output


@pytest.mark.parametrize("bad", ["[1, 2]", '{"x": 3}'])
def test_bad_label_dict_file_is_usage_error(tmp_path, bad):
    json_root, _, doc = _good(tmp_path)
    _save(json_root, doc)
    (tmp_path / "labels.json").write_text(bad)
    result = CliRunner().invoke(data, ["summary", "--json-root", str(json_root), "--label-dict",
                                       str(tmp_path / "labels.json")])  # fmt: skip
    assert result.exit_code == 2 and "labels.json" in result.output
