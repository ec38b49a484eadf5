"""Soups: greedy selection rules, uniform averaging vs an independent mean, the CLI writing a detector dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score
from test_eval_support import make_dataset, make_detectors

from eval.cli import main
from eval.soup import greedy_select
from mergekit_clip.detector.io import create_detector, load_provenance, read_state_dict, save_detector


def test_greedy_ranks_then_adds_only_improvements():
    names = ["a", "b", "c", "d"]
    individual = [0.6, 0.9, 0.7, 0.8]
    table = {(1, 3): 0.95, (1, 3, 2): 0.94, (1, 3, 0): 0.97}
    seen, kept_lists = [], []

    def score(members):
        seen.append(tuple(members))
        return table[tuple(members)]

    kept, log = greedy_select(names, individual, score, on_keep=kept_lists.append)
    assert seen == [(1, 3), (1, 3, 2), (1, 3, 0)]  # ranked b, d, c, a; c is rejected so a joins {b, d}
    assert kept == [1, 3, 0] and kept_lists == [[1], [1, 3], [1, 3, 0]]
    assert [e["kept"] for e in log] == [True, True, False, True]
    assert [e["soup_score"] for e in log] == [0.9, 0.95, 0.94, 0.97]


@pytest.mark.parametrize("rule,expected", [("drop", [0]), ("keep", [0, 1])])
def test_greedy_tie_rule(rule, expected):
    kept, log = greedy_select(["a", "b"], [0.8, 0.7], lambda m: 0.8, tie_rule=rule)
    assert kept == expected and log[1]["kept"] == (rule == "keep")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("soup")
    json_root, data_root = make_dataset(root / "ds", name="DFDC")
    return root, json_root, data_root, make_detectors(root / "m", tiny_spec)


def _common(json_root, data_root):
    return ["--json-root", json_root, "--data-root", data_root, "--workers", "0"]


def test_uniform_soup_is_the_mean_of_ingredients(setup):
    root, json_root, data_root, dirs = setup
    out = root / "uniform"
    r = CliRunner().invoke(main, ["soup", "--method", "uniform", *map(str, dirs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    soup = read_state_dict(out)
    states = [read_state_dict(d) for d in dirs]
    for key, value in soup.items():
        torch.testing.assert_close(value, torch.stack([s[key] for s in states]).mean(0), atol=1e-6, rtol=1e-5)
    prov = load_provenance(out)["soup"]
    assert prov["method"] == "uniform" and prov["members"] == ["det0", "det1", "det2"]


def test_greedy_soup_cli_writes_detector_with_log(setup):
    root, json_root, data_root, dirs = setup
    out = root / "greedy"
    args = ["soup", "--method", "greedy", *map(str, dirs), "--val", "DFDC", "--out", str(out),
            *map(str, _common(json_root, data_root))]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    soup = load_provenance(out)["soup"]
    log = soup["selection_log"]
    assert len(log) == 3 and log[0]["kept"] and soup["val_split"] == "val" and soup["metric"] == "frame_auc"
    individual = [e["individual"] for e in log]
    assert individual == sorted(individual, reverse=True)  # ranked by held-out score
    assert soup["members"] == [e["ingredient"] for e in log if e["kept"]]
    kept_scores = [e["soup_score"] for e in log if e["kept"]]
    assert kept_scores == sorted(kept_scores) and len(set(kept_scores)) == len(kept_scores)  # strict improvements
    # make_dataset writes distinct val and test frames, so no oracle warning
    assert soup["val_note"] is None
    # the soup weights are the mean of the members
    states = {d.name: read_state_dict(d) for d in dirs}
    weights = read_state_dict(out)
    expected = torch.stack([states[m]["head.weight"] for m in soup["members"]]).mean(0)
    torch.testing.assert_close(weights["head.weight"], expected, atol=1e-6, rtol=1e-5)

    # the soup is scored like any detector and its report row says how it was selected
    rep = root / "rep"
    r = CliRunner().invoke(main, [str(out), dirs[0].as_posix(), "--datasets", "DFDC", "--out", str(rep),
                                  *map(str, _common(json_root, data_root))])  # fmt: skip
    assert r.exit_code == 0, r.output
    models = json.loads((rep / "report.json").read_text())["models"]
    assert models["greedy"]["kind"] == "soup" and models["greedy"]["selection"] == "greedy soup on DFDC/val"
    assert list(models) == ["det0", "greedy"]  # ingredients first, then soups


def test_soup_refuses_bad_input(setup, tiny_spec, tmp_path):
    root, json_root, data_root, dirs = setup
    r = CliRunner().invoke(main, ["soup", "--method", "greedy", str(dirs[0]), "--out", str(tmp_path / "s")])
    assert r.exit_code == 1 and "--val" in r.output
    r = CliRunner().invoke(main, ["soup", "--method", "greedy", str(dirs[0]), "--val", "DFDC", "--val-split", "test",
                                  "--out", str(tmp_path / "s"), *map(str, _common(json_root, data_root))])  # fmt: skip
    assert r.exit_code == 1 and "test split" in r.output
    other = save_detector(create_detector(tiny_spec.model_copy(update={"backbone": tiny_spec.backbone.model_copy(
        update={"layers": 1})})), tmp_path / "other")  # fmt: skip
    args = ["soup", "--method", "uniform", str(dirs[0]), str(other), "--out", str(tmp_path / "s")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "backbone" in r.output and str(other) in r.output
    assert not (tmp_path / "s").exists()


def test_val_equal_to_test_is_reported(setup, tmp_path):
    root, _, _, dirs = setup
    json_root, data_root = make_dataset(tmp_path / "ds", name="Celeb-DF-v2")
    doc = json.loads((json_root / "Celeb-DF-v2.json").read_text())
    for group in doc["Celeb-DF-v2"].values():
        group["val"] = group["test"]  # as in the official Celeb-DF file
    (json_root / "Celeb-DF-v2.json").write_text(json.dumps(doc))
    out = tmp_path / "soup"
    r = CliRunner().invoke(main, ["soup", "--method", "uniform", *map(str, dirs), "--val", "Celeb-DF-v2",
                                  "--out", str(out), *map(str, _common(json_root, data_root))])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "identical to its test split" in load_provenance(out)["soup"]["val_note"]


def test_selection_text_from_provenance():
    from eval.provenance import model_selection

    assert model_selection({"provenance": {}}) == "ingredient"
    honest = {"provenance": {"heldout": {"dataset": "FF", "split": "val"}}}
    assert model_selection(honest) == "ingredient (held-out FF/val)"
    assert "oracle" in model_selection({"provenance": {"heldout": {"dataset": "CDF", "split": "test"}}})
    assert model_selection({"provenance": {"merge": {"method": "ties"}}}) == "merge: ties"
    assert model_selection({"mergekit_clip": {"merge": {"method": "slerp"}}}) == "merge: slerp"  # HF layout
    assert model_selection({"provenance": {"soup": {"method": "uniform"}}}) == "uniform soup"


def test_soup_refuses_a_nan_ingredient_like_a_merge(setup, tmp_path):
    """Soups = merges: a NaN ingredient is refused naming it and the tensor (it used to be averaged in)."""
    from safetensors.torch import load_file, save_file

    root, json_root, data_root, dirs = setup
    bad = tmp_path / "nan_ingredient"
    bad.mkdir()
    for f in dirs[0].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    state = load_file(str(bad / "model.safetensors"))
    state["visual.ln_post.weight"][1] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    out = tmp_path / "soup"
    r = CliRunner().invoke(main, ["soup", "--method", "uniform", str(dirs[1]), str(bad), "--out", str(out)])
    assert r.exit_code == 1, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and str(bad) in lines[0] and "visual.ln_post.weight has NaN/Inf" in lines[0], r.output
    assert not out.exists()


def test_soup_refuses_heads_in_another_label_order(setup, tmp_path, tiny_spec):
    from mergekit_clip.detector.spec import HeadSpec

    root, json_root, data_root, dirs = setup
    flipped = tmp_path / "flipped"
    save_detector(create_detector(tiny_spec.model_copy(update={"head": HeadSpec(labels=("fake", "real"))})), flipped)
    args = ["soup", "--method", "uniform", str(dirs[0]), str(flipped), "--out", str(tmp_path / "s")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "head" in r.output and str(flipped) in r.output, r.output


def _youden(labels: np.ndarray, scores: np.ndarray, t: float) -> float:
    fake = scores > t
    return fake[labels == 1].mean() - fake[labels == 0].mean()


def test_soup_video_aggregate_and_threshold_val(setup):
    """clip-eval soup's --video-aggregate pools the held-out video metric as clip-eval's does, and --threshold-val
    records the soup's max-Youden-J threshold on that dataset's val split; both checked by recomputing them."""
    from eval.predict import Predictor
    from eval.soup import SOUP_CLI_FIELDS, SoupConfig
    from mergekit_clip.data.deepfakebench import load_frames
    from mergekit_clip.detector.io import load_detector

    root, json_root, data_root, dirs = setup
    assert SoupConfig(method="uniform").video_aggregate == "mean" and SoupConfig(method="uniform").threshold_val is None
    assert set(SOUP_CLI_FIELDS) <= set(SoupConfig.model_fields)
    out = root / "greedy_max"
    args = ["soup", "--method", "greedy", *map(str, dirs), "--val", "DFDC", "--metric", "video_auc",
            "--video-aggregate", "max", "--threshold-val", "DFDC", "--out", str(out),
            *map(str, _common(json_root, data_root))]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    soup = load_provenance(out)["soup"]
    assert soup["video_aggregate"] == "max" and soup["threshold_val"] == "DFDC" and soup["metric"] == "video_auc"
    assert soup["val_threshold_source"] == "DFDC/val (max Youden J)"

    records = load_frames("DFDC", "val", json_root=json_root, data_root=data_root)
    labels = np.asarray([int(r.label) for r in records])
    videos = [str(Path(r.path).parent) for r in records]
    predictor = Predictor(num_workers=0, progress=False)

    def video_auc(scores: np.ndarray, pool) -> float:  # independent: pool per folder, then sklearn
        ids = sorted(set(videos))
        pooled = [pool(scores[[v == i for v in videos]]) for i in ids]
        return roc_auc_score([labels[videos.index(i)] for i in ids], pooled)

    by_name = {e["ingredient"]: e["individual"] for e in soup["selection_log"]}
    gap = 0.0
    for d in dirs:
        scores, ok = predictor.score_paths(load_detector(d), [str(r.path) for r in records])
        assert ok.all()
        assert by_name[d.name] == pytest.approx(video_auc(scores, np.max), abs=1e-12)
        gap = max(gap, abs(video_auc(scores, np.mean) - by_name[d.name]))
    assert gap > 0  # mean pooling ranks these ingredients differently: the option reached the metric

    scores, _ = predictor.score_paths(load_detector(out), [str(r.path) for r in records])
    threshold = soup["val_threshold"]
    candidates = np.unique(scores)
    best = max(_youden(labels, scores, t) for t in [candidates[0] - 1, *((candidates[1:] + candidates[:-1]) / 2)])
    assert _youden(labels, scores, threshold) == pytest.approx(best)
    assert candidates.min() - 1 <= threshold < candidates.max()
