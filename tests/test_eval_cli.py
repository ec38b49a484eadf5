"""clip-eval end to end on a tiny dataset: scores equal a direct forward pass, report files, bad input."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_eval_support import make_dataset, make_detectors, make_hf_classifier

from eval.cli import main
from mergekit_clip.detector.io import load_detector
from mergekit_clip.metrics import binary_auc_score


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("evalcli")
    json_root, data_root = make_dataset(root / "ds")
    make_dataset(root / "ds", name="DFDC", size=(40, 48), seed=1)  # not model-sized: exercises resize + crop
    dirs = make_detectors(root / "models", tiny_spec, seeds=(0, 1))
    return root, json_root, data_root, dirs


def _run(args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def _common(json_root, data_root):
    return ["--json-root", json_root, "--data-root", data_root, "--workers", "0", "--batch-size", "5"]


def test_scores_match_direct_forward_and_report_is_complete(setup):
    root, json_root, data_root, dirs = setup
    hf = make_hf_classifier(root / "models")
    out = root / "report"
    result = _run([*dirs, hf, "--datasets", "Celeb-DF-v2", "DFDC", "--out", out, *_common(json_root, data_root)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 6  # one JSON line per model x dataset
    report = json.loads((out / "report.json").read_text())
    assert report["datasets"] == ["Celeb-DF-v2", "DFDC"] and len(report["results"]) == 6
    for name in ("report.md", "metrics.csv", "roc_Celeb-DF-v2.png", "hist_DFDC.png"):
        assert (out / name).stat().st_size > 0, name

    # independent: decode with cv2, normalise by hand, run the model, P(fake) = softmax[:, 1]
    model = load_detector(dirs[1])
    frames = sorted((data_root / "Celeb-DF-v2").rglob("test/*/*.png"))
    x = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in frames]).astype(np.float32) / 255
    mean, std = np.array(tiny_mean_std(model)[0]), np.array(tiny_mean_std(model)[1])
    x = torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2)).float()
    with torch.no_grad():
        expected = torch.softmax(model(x), -1)[:, 1].numpy()
    rows = [json.loads(x) for x in (out / "predictions" / "det1__Celeb-DF-v2.jsonl").read_text().splitlines()[1:]]
    got = {r["path"].replace("\\", "/"): r["score"] for r in rows}
    assert len(got) == len(frames) == 18
    for f, e in zip(frames, expected):
        assert got[str(f)] == pytest.approx(float(e), abs=1e-5)
    labels = [1 if "_fake" in str(f) else 0 for f in frames]
    cell = next(r for r in report["results"] if r["model"] == "det1" and r["dataset"] == "Celeb-DF-v2")
    assert cell["frame_auc"] == pytest.approx(binary_auc_score(labels, expected), abs=1e-9)
    assert cell["frames"] == 18 and cell["frames_failed"] == 0 and cell["videos"] == 6
    assert len(cell["dataset_sha256"]) == 64

    prov = report["models"]["det0"]
    assert prov["kind"] == "ingredient" and prov["selection"].startswith("ingredient (held-out X/val)")
    assert len(prov["weights_hash"]) == 64 and prov["device"] == "cpu" and prov["dtype"] == "fp32"
    assert report["models"]["hf_clf"]["kind"] == "ingredient"

    # markdown: one row per model, the best frame AUC of each column in bold
    md = (out / "report.md").read_text()
    table = md.split("## Frame AUC")[1].split("##")[0]
    assert table.count("| ingredient |") == 3
    best = max(r["frame_auc"] for r in report["results"] if r["dataset"] == "DFDC")
    assert f"**{best:.4f}**" in table

    # the report rebuilds from predictions alone, with the same numbers
    rebuilt = root / "rebuilt"
    assert _run(["report", out / "predictions", "--out", rebuilt]).exit_code == 0
    again = json.loads((rebuilt / "report.json").read_text())
    assert again["results"] == report["results"] and again["means"] == report["means"]


def tiny_mean_std(model):
    return model.spec.preprocess.mean, model.spec.preprocess.std


def test_workers_and_cache_give_identical_scores(setup):
    from eval.predict import FrameCache, Predictor

    root, json_root, data_root, dirs = setup
    from mergekit_clip.data.deepfakebench import load_frames

    records = load_frames("DFDC", "test", json_root=json_root, data_root=data_root)
    model = load_detector(dirs[0])
    plain = Predictor(num_workers=0, progress=False).predict(model, records, "m", "DFDC")
    cache = FrameCache()
    pooled = Predictor(num_workers=1, batch_size=4, cache=cache, progress=False)
    first = pooled.predict(model, records, "m", "DFDC")
    second = pooled.predict(model, records, "m", "DFDC")  # served from the cache
    assert cache.used > 0
    np.testing.assert_allclose(first.scores, plain.scores, atol=1e-6)
    np.testing.assert_array_equal(second.scores, first.scores)

    # exact (default) resize = the training side's eval transform; fast (OpenCV, uint8) stays close
    from mergekit_clip.data.transforms import build_eval_transform, read_image

    transform = build_eval_transform(model.spec.preprocess)
    with torch.no_grad():
        ref = model.fake_probability(torch.stack([transform(read_image(r.path)) for r in records])).numpy()
    np.testing.assert_allclose(plain.scores, ref, atol=1e-6)
    fast = Predictor(num_workers=0, progress=False, resize="fast").predict(model, records, "m", "DFDC")
    assert np.abs(fast.scores - ref).max() < 0.02 and not np.array_equal(fast.scores, ref)


def test_video_id_parent_changes_pooling(setup):
    root, json_root, data_root, dirs = setup
    out = root / "parent"
    args = [dirs[0], "--datasets", "Celeb-DF-v2", "--video-id", "parent", "--out", out, *_common(json_root, data_root)]
    assert _run(args).exit_code == 0
    report = json.loads((out / "report.json").read_text())
    # real and fake videos share the folder names 000..002: parent pooling leaves 3 videos, all "real" (a pooled
    # video is fake only if every frame is, as in DeepfakeBench), so video AUC is undefined
    assert report["results"][0]["videos"] == 3 and report["results"][0]["video_auc"] is None


def test_bad_inputs_are_clear_errors(setup, tmp_path):
    root, json_root, data_root, dirs = setup
    common = _common(json_root, data_root)
    not_model = tmp_path / "not_a_model"
    not_model.mkdir()
    r = _run([not_model, "--datasets", "DFDC", "--out", tmp_path / "r1", *common])
    assert r.exit_code == 1 and "not a detector" in r.output and "config.json" in r.output
    assert not (tmp_path / "r1").exists()

    r = _run([dirs[0], "--datasets", "Nope", "--out", tmp_path / "r2", *common])
    assert r.exit_code == 1 and "Nope" in r.output

    make_dataset(tmp_path / "ds", name="DFDC", splits=("train", "val"))  # no test split
    r = _run(
        [dirs[0], "--datasets", "DFDC", "--out", tmp_path / "r3", *_common(tmp_path / "ds/json", tmp_path / "ds/data")]
    )
    assert r.exit_code == 1 and "test" in r.output and not (tmp_path / "r3").exists()

    existing = tmp_path / "exists"
    existing.mkdir()
    r = _run([dirs[0], "--datasets", "DFDC", "--out", existing, *common])
    assert r.exit_code == 1 and "already exists" in r.output


def test_undecodable_frame_is_counted_or_strict_error(setup, tmp_path):
    _, _, _, dirs = setup
    json_root, data_root = make_dataset(tmp_path / "ds", name="DFDC")
    broken = sorted((data_root / "DFDC").rglob("test/*/1.png"))[0]
    broken.write_bytes(b"not a png")
    common = _common(json_root, data_root)
    r = _run([dirs[0], "--datasets", "DFDC", "--out", tmp_path / "ok", "--max-failed-share", "0.1", *common])
    assert r.exit_code == 0 and "1 undecodable" in r.output
    cell = json.loads((tmp_path / "ok" / "report.json").read_text())["results"][0]
    assert cell["frames_failed"] == 1 and cell["frames"] == 17 and not math.isnan(cell["frame_auc"])
    r = _run([dirs[0], "--datasets", "DFDC", "--out", tmp_path / "strict", "--fail-on-undecodable", *common])
    assert r.exit_code == 1 and str(broken) in r.output and not (tmp_path / "strict").exists()


def test_bf16_on_cpu_is_close_to_fp32(setup):
    from eval.predict import Predictor
    from mergekit_clip.data.deepfakebench import load_frames

    _, json_root, data_root, dirs = setup
    records = load_frames("Celeb-DF-v2", "test", json_root=json_root, data_root=data_root)
    fp32 = Predictor(num_workers=0, progress=False).predict(load_detector(dirs[0]), records, "m", "c")
    bf16 = Predictor(num_workers=0, progress=False, bf16=True)
    low = bf16.predict(load_detector(dirs[0]), records, "m", "c")
    assert bf16.dtype_name == "bf16-weights"
    assert np.abs(low.scores - fp32.scores).max() < 0.02
    assert not np.array_equal(low.scores, fp32.scores)  # it really ran in bf16


def test_mergekit_output_is_scored_as_a_merge(setup):
    from merge_support import recipe, run_mergekit_yaml

    root, json_root, data_root, dirs = setup
    proc = run_mergekit_yaml(recipe("linear", dirs[0], dirs), root / "merges", "lin", "--no-write-model-card")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = root / "merge_report"
    r = _run([root / "merges" / "lin", dirs[0], "--datasets", "DFDC", "--out", out, *_common(json_root, data_root)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["lin"]["kind"] == "merge" and report["models"]["lin"]["selection"] == "merge: linear"
    assert list(report["models"]) == ["det0", "lin"]
    assert "| merge | `lin` |" in (out / "report.md").read_text()


def test_a_frame_list_dataset_scores_like_its_json(setup):
    """The reader registry reaches clip-eval: the same frames as a CSV frame list give the same scores."""
    import csv

    from mergekit_clip.data.deepfakebench import load_frames as load_json_frames

    root, json_root, data_root, dirs = setup
    with open(json_root / "DFDC-list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "video", "split"])
        for r in load_json_frames("DFDC", "test", json_root=json_root, data_root=data_root):
            writer.writerow([r.path.relative_to(data_root).as_posix(), r.label, r.video_id, "test"])
    out = root / "report_list"
    result = _run([dirs[0], "--datasets", "DFDC", "DFDC-list", "--out", out, *_common(json_root, data_root)])
    assert result.exit_code == 0, result.output
    cells = {c["dataset"]: c for c in json.loads((out / "report.json").read_text())["results"]}
    for key in ("frames", "frame_auc", "video_auc", "eer"):
        assert cells["DFDC-list"][key] == pytest.approx(cells["DFDC"][key]), key
