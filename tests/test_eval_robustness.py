"""clip-eval under perturbations: worker-side hook, cache key, report tables and plots, seeded reproducibility."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_eval_support import make_dataset, make_detectors

from eval.cli import main
from eval.predict import FrameCache, FrameDecodeError, Predictor, load_frame
from eval.robustness import predict_perturbed
from eval.robustness_run import evaluate_robustness
from mergekit_clip.data.deepfakebench import load_frames
from mergekit_clip.data.perturbations import parse_perturbation
from mergekit_clip.data.transforms import read_image
from mergekit_clip.detector.io import load_detector


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("robust")
    json_root, data_root = make_dataset(root / "ds", frames=4)
    dirs = make_detectors(root / "models", tiny_spec, seeds=(0, 1))
    return root, json_root, data_root, dirs


def _records(json_root, data_root, split="test"):
    return load_frames("Celeb-DF-v2", split, json_root=json_root, data_root=data_root)


def test_perturbed_scores_equal_a_direct_forward_pass(setup):
    _, json_root, data_root, dirs = setup
    records = _records(json_root, data_root)
    model = load_detector(dirs[0])
    spec = parse_perturbation("GB:7")
    predictor = Predictor(num_workers=0, batch_size=5, cache=FrameCache(64), progress=False, perturb_seed=3)
    pred = predictor.predict(model, records, "m", "Celeb-DF-v2", spec)
    assert pred.meta["perturbation"] == "gaussian_blur:7" and pred.meta["perturb_seed"] == 3
    frames = []
    for r in records:  # the independent path: perturb the decoded frame, then the model's own resize
        rgb = spec.apply_frame(read_image(r.path), 3, str(r.path))
        frames.append(load_frame(r.path, model.spec.preprocess, "exact", rgb))
    x = torch.stack(frames)
    mean = torch.tensor(model.spec.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.spec.preprocess.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.fake_probability_from_logits(model((x - mean) / std)).numpy()
    np.testing.assert_allclose(pred.scores, expected, atol=1e-6)
    # the cache keeps clean and perturbed frames apart, and a second perturbed run is served from it identically
    clean = predictor.predict(model, records, "m", "Celeb-DF-v2")
    assert np.abs(clean.scores - pred.scores).max() > 1e-4
    again = predictor.predict(model, records, "m", "Celeb-DF-v2", spec)
    np.testing.assert_array_equal(again.scores, pred.scores)


def test_video_perturbation_in_workers_matches_in_process(setup):
    _, json_root, data_root, dirs = setup
    records = _records(json_root, data_root)
    model = load_detector(dirs[0])
    spec = parse_perturbation("VC:40")
    runs = []
    for workers in (0, 2):
        predictor = Predictor(num_workers=workers, batch_size=3, progress=False)
        runs.append(predictor.predict(model, records, "m", "Celeb-DF-v2", spec).scores)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.isfinite(runs[0]).all()


def test_cli_suite_report_and_reproducibility(setup):
    root, json_root, data_root, dirs = setup
    common = ["--json-root", json_root, "--data-root", data_root, "--workers", "0", "--batch-size", "6"]
    outs = []
    for run in ("a", "b"):
        out = root / f"report_{run}"
        args = [*dirs, "--datasets", "Celeb-DF-v2", "--out", out, *common]
        args += ["--perturb", "CS:0.4,CS:0.0", "--perturb", "GB:7", "--perturb", "GB:21", "--perturb", "BW:16"]
        args += ["--perturb-seed", "5", "--video-aggregate", "max", "--threshold-val", "Celeb-DF-v2"]
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outs.append(out)
    report = json.loads((outs[0] / "report.json").read_text())
    robust = report["robustness"]
    assert robust["types"] == ["saturation", "block_occlusion", "gaussian_blur"]  # registry order
    assert len(robust["rows"]) == 2 * 5  # models x perturbations
    for s in robust["summary"]:
        clean = next(r for r in report["results"] if r["model"] == s["model"])
        assert s["clean_frame_auc"] == clean["frame_auc"]
        levels = [r["frame_auc"] for r in robust["rows"] if (r["model"], r["type"]) == (s["model"], s["type"])]
        assert s["mean_frame_auc"] == pytest.approx(np.mean(levels))
        assert s["drop_frame_auc"] == pytest.approx(clean["frame_auc"] - np.mean(levels))
    for name in ("robustness_frame_auc_Celeb-DF-v2.png", "robustness_video_auc_Celeb-DF-v2.png", "robustness.csv"):
        assert (outs[0] / name).is_file(), name
    assert (outs[0] / "reliability_Celeb-DF-v2.png").is_file()
    md = (outs[0] / "report.md").read_text()
    assert "## Robustness to perturbations" in md and "ACC @ threshold chosen on source val" in md
    assert report["video_aggregate"] == "max" and report["models"]
    assert all(r["acc_val_threshold"] is not None for r in report["results"])
    # one seed, two runs: every number identical
    rows = [list(csv.reader(open(o / "robustness.csv"))) for o in outs]
    assert rows[0] == rows[1]
    # the report rebuilds from the saved predictions, robustness included
    rebuilt = root / "rebuilt"
    result = CliRunner().invoke(main, ["report", str(outs[0]), "--out", str(rebuilt), "--video-aggregate", "max"])
    assert result.exit_code == 0, result.output
    assert json.loads((rebuilt / "report.json").read_text())["robustness"]["rows"] == robust["rows"]


def test_bad_perturbation_is_a_usage_error(setup):
    root, json_root, data_root, dirs = setup
    args = [dirs[0], "--datasets", "Celeb-DF-v2", "--out", root / "bad", "--json-root", json_root]
    args += ["--data-root", data_root, "--perturb", "GB:8"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2 and "odd kernel" in result.output and not (root / "bad").exists()


def test_library_entry_point(setup):
    root, json_root, data_root, dirs = setup
    records = {"Celeb-DF-v2": _records(json_root, data_root)}
    result = evaluate_robustness(
        {"a": dirs[0], "b": dirs[1]},
        records,
        ["JPEG:2", "GNC:0.05"],
        Predictor(num_workers=0, progress=False),
        seed=1,
    )
    assert set(result["robustness"]["means"]) == {"a", "b"}
    assert len(result["predictions"]) == 2 * 3
    assert {r["perturbation"] for r in result["robustness"]["rows"]} == {"pixelation:2", "color_noise:0.05"}


def _cached_images(cache: FrameCache) -> dict:
    return {(key[0], key[3]): image for key, image in cache._frames.items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_one_pass_equals_a_pass_per_perturbation(setup, tmp_path, workers):
    """predict_perturbed (each frame decoded once for every variant) gives each variant the very images and the
    scores of predictor.predict with that variant alone, an undecodable frame included."""
    _, json_root, data_root, dirs = setup
    records = [SimpleNamespace(path=r.path, label=r.label, video_id=r.video_id, dataset=r.dataset)
               for r in _records(json_root, data_root)]  # fmt: skip
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    records[1].path = bad  # inside the first video: its H.264 context is the video's other frames
    model = load_detector(dirs[0])
    variants = [None, *(parse_perturbation(s) for s in ("GB:7", "BW:16", "GNC:0.01", "VC:40", "VC:30", "resize:64"))]
    one = Predictor(num_workers=workers, batch_size=4, cache=FrameCache(64), progress=False, perturb_seed=2)
    many = predict_perturbed(one, model, records, "m", "Celeb-DF-v2", variants, run="x")
    single = Predictor(num_workers=workers, batch_size=4, cache=FrameCache(64), progress=False, perturb_seed=2)
    assert len(many) == len(variants)
    for variant, pred in zip(variants, many):
        ref = single.predict(model, records, "m", "Celeb-DF-v2", variant, run="x")
        assert pred.meta == ref.meta and pred.paths == ref.paths and pred.video_ids == ref.video_ids
        np.testing.assert_array_equal(pred.labels, ref.labels)
        np.testing.assert_array_equal(pred.ok, ref.ok)
        assert pred.ok.sum() == len(records) - 1 and not pred.ok[1]
        np.testing.assert_allclose(pred.scores, ref.scores, atol=1e-6, equal_nan=True)
    mine, theirs = _cached_images(one.cache), _cached_images(single.cache)
    assert len(mine) == len(theirs) == len(variants) * len(records)
    for key, image in theirs.items():  # every perturbed pixel, bit for bit
        assert (image is None) == (mine[key] is None), key
        assert image is None or torch.equal(image, mine[key]), key
    # partly cached: the GB:7 images come from the cache, the rest is computed; scores unchanged
    partial = Predictor(num_workers=workers, batch_size=4, cache=FrameCache(64), progress=False, perturb_seed=2)
    partial.predict(model, records, "m", "Celeb-DF-v2", variants[1])
    again = predict_perturbed(partial, model, records, "m", "Celeb-DF-v2", variants, run="x")
    for first, second in zip(many, again):
        np.testing.assert_allclose(first.scores, second.scores, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_one_pass_strict_names_the_undecodable_frame(setup, tmp_path, workers):
    _, json_root, data_root, dirs = setup
    records = [SimpleNamespace(path=r.path, label=r.label, video_id=r.video_id, dataset=r.dataset)
               for r in _records(json_root, data_root)]  # fmt: skip
    records[2].path = tmp_path / "gone.png"
    model = load_detector(dirs[0])
    strict = Predictor(num_workers=workers, batch_size=4, progress=False, strict=True)
    for variants in ([parse_perturbation("VC:40")], [parse_perturbation("GB:9"), None]):
        with pytest.raises(FrameDecodeError) as caught:  # raised in the main process: one line, no worker traceback
            predict_perturbed(strict, model, records, "m", "Celeb-DF-v2", variants)
        assert str(caught.value) == f"{tmp_path / 'gone.png'}: is missing (no such file) (strict mode)"
    with pytest.raises(FrameDecodeError) as caught:
        strict.predict(model, records, "m", "Celeb-DF-v2")
    assert str(caught.value) == f"{tmp_path / 'gone.png'}: is missing (no such file) (strict mode)"
    if workers:
        return
    cache = FrameCache(64)  # known undecodable from a lenient run: the strict one still refuses it
    Predictor(num_workers=0, batch_size=4, progress=False, cache=cache).predict(model, records, "m", "x")
    strict.cache = cache
    with pytest.raises(FrameDecodeError, match="gone.png: is missing"):
        predict_perturbed(strict, model, records, "m", "Celeb-DF-v2", [None])


@pytest.mark.parametrize("workers", [0, 2])
def test_cli_strict_undecodable_frame_is_one_error_line_naming_frame_and_dataset(setup, tmp_path, workers):
    from test_eval_support import make_dataset as make_other

    _, _, _, dirs = setup
    json_root, data_root = make_other(tmp_path / "ds", name="DFDC", frames=2)
    broken = sorted((data_root / "DFDC").rglob("test/*/1.png"))[0]
    broken.write_bytes(b"not a png")
    args = [dirs[0], "--datasets", "DFDC", "--json-root", json_root, "--data-root", data_root, "--workers", workers,
            "--batch-size", "4", "--out", tmp_path / "out", "--perturb", "GB:9,VC:40",
            "--fail-on-undecodable"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(broken) in errors[0] and "DFDC" in errors[0], result.output
    assert "Traceback" not in result.output and "DataLoader worker" not in result.output
    assert not (tmp_path / "out").exists()
