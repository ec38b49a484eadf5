"""Trust (issue 12), data and labels: frame paths stay under the data root, one label normalisation for every
stage, no report of nulls, frames checked before training. Each test fails on the code before the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from test_eval_support import make_dataset as make_eval_dataset
from train_support import make_dataset as make_train_dataset
from train_support import tiny_config

from mergekit_clip.data.cli import data
from mergekit_clip.data.deepfakebench import DatasetError, load_frames
from mergekit_clip.data.transforms import FrameDecodeError, FrameMissingError, check_image
from mergekit_clip.data.validate import validate_dataset
from mergekit_clip.detector.io import create_detector, load_detector, save_detector
from mergekit_clip.detector.spec import HeadSpec

# ----------------------------------------------------------------------------------------------- paths


def _plain_dataset(tmp_path: Path, frames: dict[str, list[str]]) -> tuple[Path, Path]:
    """UADFV-style JSON (no compression level): one real and one fake test video per entry of ``frames``."""
    json_root, data_root = tmp_path / "json", tmp_path / "data"
    json_root.mkdir(parents=True, exist_ok=True)
    data_root.mkdir(parents=True, exist_ok=True)
    doc: dict = {"UADFV_Real": {"test": {}}, "UADFV_Fake": {"test": {}}}
    for i, (video, paths) in enumerate(frames.items()):
        group = "UADFV_Fake" if i % 2 else "UADFV_Real"
        doc[group]["test"][video] = {"label": group, "frames": paths}
    (json_root / "UADFV.json").write_text(json.dumps({"UADFV": doc}))
    return json_root, data_root


def _png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, dtype=np.uint8))


@pytest.fixture
def escapes(tmp_path):
    """One dataset per way out of the data root, each pointing at a real PNG outside it."""
    secret = tmp_path / "outside" / "secret" / "0.png"
    _png(secret)
    cases = {}
    ways = (("dotdot", "..\\..\\outside\\secret\\0.png"), ("absolute", str(secret)), ("symlink", "v/link/0.png"))
    for kind, raw in ways:
        root = tmp_path / kind
        json_root, data_root = _plain_dataset(root, {"r0": ["r0/0.png"], "bad": [raw]})
        _png(data_root / "r0" / "0.png")
        if kind == "symlink":
            (data_root / "v").mkdir()
            (data_root / "v" / "link").symlink_to(secret.parent, target_is_directory=True)
        cases[kind] = (json_root, data_root, raw, secret)
    return cases


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_frames_outside_the_data_root_are_refused_by_the_reader(escapes, kind):
    json_root, data_root, raw, secret = escapes[kind]
    with pytest.raises(DatasetError) as info:  # before: the outside file was read as a frame
        load_frames("UADFV", "test", json_root=json_root, data_root=data_root, follow_symlinks=False)
    message = str(info.value)
    assert str(json_root / "UADFV.json") in message and "UADFV_Fake/test/bad" in message
    assert "--allow-outside-root" in message
    expected = {"dotdot": "climbs above the data root", "absolute": "is an absolute path", "symlink": "symlink"}
    assert expected[kind] in message
    allowed = load_frames("UADFV", "test", json_root=json_root, data_root=data_root, allow_outside_root=True)
    outside = [r for r in allowed if r.video_id != "r0"]
    assert len(outside) == 1 and outside[0].path.resolve() == secret.resolve()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_validate_reports_outside_paths_without_opening_them(escapes, kind, monkeypatch):
    json_root, data_root, _, _ = escapes[kind]
    opened: list[str] = []
    import mergekit_clip.data.validate as validate_module

    real_check = validate_module.check_image
    monkeypatch.setattr(validate_module, "check_image", lambda p, m: (opened.append(str(p)), real_check(p, m)))
    args = ["validate", "--json-root", str(json_root), "--data-root", str(data_root), "--no-follow-symlinks"]
    result = CliRunner().invoke(data, args)
    assert result.exit_code == 1, result.output  # before: exit 0, "ok: no problems found"
    assert "ERROR outside_root: 1" in result.output and "UADFV_Fake/test/bad" in result.output
    assert not any("secret" in p for p in opened) and len(opened) == 1
    assert CliRunner().invoke(data, [*args, "--allow-outside-root"]).exit_code == 0
    followed = CliRunner().invoke(data, args[:-1])  # the default follows links: only the lexical escapes are errors
    assert followed.exit_code == (0 if kind == "symlink" else 1), followed.output


def test_dotdot_inside_the_root_is_fine(tmp_path):
    json_root, data_root = _plain_dataset(tmp_path, {"r0": ["a/../r0/0.png"], "f0": ["f0/0.png"]})
    recs = load_frames("UADFV", "test", json_root=json_root, data_root=data_root)
    assert [r.label for r in recs] == [0, 1]


def test_clip_train_refuses_a_frame_outside_the_root(tmp_path):
    from train.cli import main

    json_root, data_root = make_train_dataset(tmp_path, "TinyA", videos={"train": 2, "val": 2}, frames=2)
    doc = json.loads((json_root / "TinyA.json").read_text())
    video = doc["TinyA"]["CelebDFv2_fake"]["train"]["train_1_00"]
    outside = tmp_path / "elsewhere" / "0.png"
    shutil.copytree(data_root / "TinyA" / "CelebDFv2_fake" / "train_1_00", outside.parent)
    video["frames"][0] = "..\\elsewhere\\0.png"
    (json_root / "TinyA.json").write_text(json.dumps(doc))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path / "out")))
    result = CliRunner().invoke(main, [str(cfg)])
    assert result.exit_code == 1, result.output
    assert "Error: " in result.output and "train_1_00" in result.output
    assert "climbs above the data root" in result.output
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("raw, canonical", [((" Fake",), ("fake",)), (("REAL", "Fake"), ("real", "fake")),
                                            (("FAKE ", "real"), ("fake", "real"))])  # fmt: skip
def test_head_labels_are_canonical_after_validation(raw, canonical):
    head = HeadSpec(num_classes=len(raw), labels=raw)
    assert head.labels == canonical and head.positive_label == canonical[-1]


@pytest.mark.parametrize("raw", [("LABEL_0", "LABEL_1"), ("real", "fak"), ("genuine", "fake")])
def test_refused_head_labels_are_one_line(tmp_path, tiny_spec, raw):
    from eval.cli import main

    model = save_detector(create_detector(tiny_spec, 0), tmp_path / "det")
    cfg = json.loads((model / "config.json").read_text())
    cfg["head"]["labels"] = list(raw)
    (model / "config.json").write_text(json.dumps(cfg))
    json_root, data_root = make_eval_dataset(tmp_path / "ds")
    args = [str(model), "--datasets", "Celeb-DF-v2", "--json-root", str(json_root), "--data-root", str(data_root),
            "--out", str(tmp_path / "r")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and len(result.output.strip().splitlines()) == 1 and "head.labels" in error[0]
    assert "'real', 'fake'" in error[0] and not (tmp_path / "r").exists()


def _relabel(src: Path, dst: Path, labels: list[str]) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["head"]["labels"] = labels
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("num_classes, canonical, variant", [(1, ["fake"], ["Fake"]), (1, ["fake"], [" FAKE "]),
                                                             (2, ["real", "fake"], ["REAL", "Fake"])])  # fmt: skip
def test_case_variant_head_scores_like_the_canonical_one(tmp_path, tiny_spec, num_classes, canonical, variant):
    from eval.predict import Predictor
    from mergekit_clip.metrics import binary_auc_score

    spec = tiny_spec.model_copy(update={"head": HeadSpec(num_classes=num_classes, labels=tuple(canonical))})
    model = create_detector(spec, 3)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    base = save_detector(model, tmp_path / "canonical")
    other = _relabel(base, tmp_path / "variant", variant)
    json_root, data_root = make_eval_dataset(tmp_path / "ds")
    records = load_frames("Celeb-DF-v2", "test", json_root=json_root, data_root=data_root)
    predictor = Predictor(num_workers=0, progress=False)
    a = predictor.predict(load_detector(base), records, "a", "c")
    b = predictor.predict(load_detector(other), records, "b", "c")
    np.testing.assert_array_equal(a.scores, b.scores)  # before: 1 - p for 1-logit, a crash for 2-logit
    auc = binary_auc_score(a.labels, a.scores)
    assert auc != 0.5 and binary_auc_score(b.labels, b.scores) == auc


def test_merge_head_policy_reads_case_variants_like_canonical_labels():
    from mergekit_clip.plugin.heads import MergeContext, ModelHeadInfo, prepare_inputs

    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    heads = {
        "a": HeadSpec(labels=("REAL", "Fake")),
        "b": HeadSpec(labels=("Fake", " real")),
        "c": HeadSpec(num_classes=1, labels=("Fake",)),
        "d": HeadSpec(num_classes=1, labels=("fake",)),
    }
    ctx = MergeContext(models={k: ModelHeadInfo(k, h) for k, h in heads.items()})
    one = torch.tensor([[5.0, 6.0]])
    out = prepare_inputs("head.weight", {"a": w, "b": w, "c": one, "d": one}, ctx, list(heads))
    torch.testing.assert_close(out["a"], w)  # before: ValueError 'real' is not in list (crash mid-merge)
    torch.testing.assert_close(out["b"], w.flip(0))
    torch.testing.assert_close(out["c"], torch.cat([-one / 2, one / 2]))  # before: sign flipped
    torch.testing.assert_close(out["c"], out["d"])


def test_dataset_label_strings_are_matched_case_insensitively_everywhere(tmp_path):
    json_root, data_root = _plain_dataset(tmp_path, {"r0": ["r0/0.png"], "f0": ["f0/0.png"]})
    doc = json.loads((json_root / "UADFV.json").read_text())
    doc["UADFV"]["UADFV_Real"]["test"]["r0"]["label"] = " uadfv_real"
    doc["UADFV"]["UADFV_Fake"]["test"]["f0"]["label"] = "UADFV_FAKE"
    (json_root / "UADFV.json").write_text(json.dumps(doc))
    for rel in ("r0/0.png", "f0/0.png"):
        _png(data_root / rel)
    recs = load_frames("UADFV", "test", json_root=json_root, data_root=data_root)
    assert [r.label for r in recs] == [0, 1]  # before: DatasetError (label not in the label dict)
    report = validate_dataset("UADFV", json_root=json_root, data_root=data_root, progress=False)
    assert "unknown_label" not in report.findings
    conflict = tmp_path / "labels.json"
    conflict.write_text(json.dumps({"UADFV_Real": 0, "uadfv_real": 1, "UADFV_Fake": 1}))
    result = CliRunner().invoke(data, ["validate", "--json-root", str(json_root), "--label-dict", str(conflict)])
    assert result.exit_code == 2 and "'UADFV_Real' and 'uadfv_real'" in result.output


# ----------------------------------------------------------------------------------------------- no empty success


@pytest.fixture
def scored(tmp_path, tiny_spec):
    json_root, data_root = make_eval_dataset(tmp_path / "ds")
    model = save_detector(create_detector(tiny_spec, 0), tmp_path / "det")
    common = ["--datasets", "Celeb-DF-v2", "--json-root", str(json_root), "--workers", "0"]
    return tmp_path, model, data_root, common


def test_a_wrong_data_root_is_an_error_not_a_report_of_nulls(scored):
    from eval.cli import main

    tmp_path, model, _, common = scored
    wrong = tmp_path / "wrong_root"
    wrong.mkdir()
    result = CliRunner().invoke(main, [str(model), *common, "--data-root", str(wrong), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output  # before: exit 0 and a report whose metrics are all null
    assert "Error: Celeb-DF-v2: none of its 18 frames can be scored: 18 missing (e.g. " in result.output
    assert "check --data-root" in result.output and not (tmp_path / "r").exists()


def test_too_many_undecodable_frames_is_an_error(scored):
    from eval.cli import main

    tmp_path, model, data_root, common = scored
    broken = sorted((data_root / "Celeb-DF-v2").rglob("test/*/1.png"))[:2]
    for path in broken:
        path.write_bytes(b"not a png")
    args = [str(model), *common, "--data-root", str(data_root)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and not (tmp_path / "r").exists()
    assert "2 of 18 frames cannot be scored (11.1% > --max-failed-share 5.0%): 2 undecodable (e.g. " in result.output
    assert "missing" not in result.output
    ok = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r2"), "--max-failed-share", "0.2"])
    assert ok.exit_code == 0 and "2 of 18 frame(s) skipped: 2 undecodable" in ok.output
    assert (tmp_path / "r2" / "report.json").exists()


def test_validate_does_not_fail_a_test_only_dataset(tmp_path):
    json_root, data_root = _plain_dataset(tmp_path, {"r0": ["r0/0.png"], "f0": ["f0/0.png"]})
    for rel in ("r0/0.png", "f0/0.png"):
        _png(data_root / rel)
    result = CliRunner().invoke(data, ["validate", "--json-root", str(json_root), "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output  # before: ERROR empty_split (train, val), exit 1
    assert "NOTE empty_split: 2" in result.output
    with pytest.raises(DatasetError, match="split 'train' of UADFV is empty"):  # the command that reads it refuses
        load_frames("UADFV", "train", json_root=json_root, data_root=data_root)


# ----------------------------------------------------------------------------------------------- pre-checks


def test_check_image_modes(tmp_path):
    good, cut, garbled = tmp_path / "good.png", tmp_path / "cut.png", tmp_path / "garbled.png"
    _png(good)
    blob = good.read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    garbled.write_bytes(blob[:33] + bytes(len(blob) - 45) + blob[-12:])  # header and end chunk intact
    for mode in ("exists", "header", "decode"):
        check_image(good, mode)
        with pytest.raises(FrameMissingError, match="missing"):
            check_image(tmp_path / "nope.png", mode)
    check_image(cut, "exists")
    with pytest.raises(FrameDecodeError, match="truncated PNG"):
        check_image(cut, "header")
    check_image(garbled, "header")  # only a full decode sees a corrupt body
    with pytest.raises(FrameDecodeError, match="cannot decode"):
        check_image(garbled, "decode")


@pytest.mark.parametrize("damage, check, message", [
    ("delete", "header", "is missing (no such file)"),
    ("truncate", "header", "truncated PNG"),
    ("garble", "decode", "cannot decode frame"),
])  # fmt: skip
def test_clip_train_checks_every_frame_before_any_output(tmp_path, damage, check, message):
    from train.cli import main

    json_root, data_root = make_train_dataset(tmp_path, "TinyA", videos={"train": 2, "val": 2}, frames=2)
    frame = sorted((data_root / "TinyA").rglob("val_*/5.png"))[0]
    blob = frame.read_bytes()
    if damage == "delete":
        frame.unlink()
    elif damage == "truncate":
        frame.write_bytes(blob[: len(blob) // 2])
    else:
        frame.write_bytes(blob[:33] + bytes(len(blob) - 45) + blob[-12:])
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path, tmp_path / "out", **{"data.check_images": check})))
    result = CliRunner().invoke(main, [str(cfg)])
    assert result.exit_code == 1, result.output  # before: found mid-training, a traceback, a partial run folder
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(frame) in lines[0] and message in lines[0]
    assert "(in TinyA val" in lines[0] and not (tmp_path / "out").exists()


def test_greedy_soup_refuses_a_wrong_data_root(scored, tiny_spec):
    from test_eval_support import make_detectors

    from eval.cli import main

    tmp_path, _, _, common = scored
    dirs = make_detectors(tmp_path / "family", tiny_spec, seeds=(0, 1))
    wrong = tmp_path / "wrong_root"
    wrong.mkdir()
    args = ["soup", "--method", "greedy", *map(str, dirs), "--val", "Celeb-DF-v2", "--json-root", common[3],
            "--data-root", str(wrong), "--workers", "0", "--out", str(tmp_path / "soup")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "none of its 18 frames can be scored: 18 missing" in result.output
    assert not (tmp_path / "soup").exists()


@pytest.mark.slow
def test_mergekit_merges_case_variant_heads_like_canonical_ones(tmp_path, tiny_spec):
    """End to end through stock mergekit-yaml: relabelled copies ("Fake", ["FAKE", " Real"]) merge bit-identically."""
    from merge_support import build_open_clip_family, recipe, run_many, tensors

    heads = [HeadSpec(), HeadSpec(labels=("fake", "real")), HeadSpec(num_classes=1, labels=("fake",))]
    family = build_open_clip_family(tmp_path / "family", tiny_spec, heads, base_head=False)
    variants = {"ft0": ["REAL", "fake "], "ft1": ["FAKE", " Real"], "ft2": ["Fake"]}
    relabelled = {name: _relabel(family[name], tmp_path / "variant" / name, v) for name, v in variants.items()}
    models = ["ft0", "ft1", "ft2"]
    jobs = {
        "canonical": (recipe("task_arithmetic", family["base"], [family[m] for m in models]), tmp_path / "out"),
        "variant": (recipe("task_arithmetic", family["base"], [relabelled[m] for m in models]), tmp_path / "out"),
    }
    results = run_many(jobs)
    for name, proc in results.items():
        assert proc.returncode == 0, (name, proc.stderr[-2000:])  # before: ValueError 'real' is not in list
    a, b = tensors(tmp_path / "out" / "canonical"), tensors(tmp_path / "out" / "variant")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
