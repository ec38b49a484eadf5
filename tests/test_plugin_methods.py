"""Every mergekit 0.1.5 method through the stock ``mergekit-yaml`` on tiny detectors of our format.

The family has a *bare* base (no head, as a pretrained CLIP) and three fine-tunes whose heads differ in form:
canonical 2-logit, reversed label order, and 1-logit. So every run also exercises the head policy. Merged
tensors of linear, task_arithmetic, ties, slerp, model_stock and (seeded) dare_linear are compared with
computations written here from the methods' definitions.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from merge_support import ALL_METHODS, WEIGHTS, build_open_clip_family, recipe, run_many, tensors

from mergekit_clip.detector.io import load_detector
from mergekit_clip.detector.spec import HeadSpec

HEADS = [
    HeadSpec(),
    HeadSpec(labels=("fake", "real")),
    HeadSpec(num_classes=1, labels=("real", "fake")),
]


@pytest.fixture(scope="module")
def family(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("family")
    return build_open_clip_family(root, tiny_spec, HEADS, base_head=False)


@pytest.fixture(scope="module")
def merges(family, tmp_path_factory):
    work = tmp_path_factory.mktemp("merges")
    models = [family["ft0"], family["ft1"], family["ft2"]]
    jobs = {m: (recipe(m, family["base"], models), work) for m in ALL_METHODS}
    # dare_linear with one ingredient, twice with the same seed: checks the mask structure and determinism.
    one = recipe("dare_linear", family["base"], models[:1])
    jobs["dare_seeded_a"] = (one, work, "--random-seed", "7")
    jobs["dare_seeded_b"] = (one, work, "--random-seed", "7")
    results = run_many(jobs)
    return {name: (proc, work / name) for name, proc in results.items()}


def canonical_inputs(family) -> dict[str, dict[str, torch.Tensor]]:
    """The inputs as the documented head policy presents them to a merge method."""
    sds = {name: tensors(path) for name, path in family.items()}
    sds["ft1"]["head.weight"] = sds["ft1"]["head.weight"][[1, 0]]
    sds["ft1"]["head.bias"] = sds["ft1"]["head.bias"][[1, 0]]
    for key in ("head.weight", "head.bias"):
        w = sds["ft2"][key]
        sds["ft2"][key] = torch.cat([-w / 2, w / 2])
        sds["base"][key] = torch.stack([sds[f"ft{i}"][key] for i in range(3)]).mean(0)
    return sds


@pytest.mark.parametrize("method", ALL_METHODS)
def test_method_yields_working_detector(method, merges, tiny_spec):
    proc, out = merges[method]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "head policy" in proc.stderr  # the merge log states the policy
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "clip_detector"
    assert config["head"]["labels"] == ["real", "fake"] and config["head"]["num_classes"] == 2
    assert config["provenance"]["merge"]["method"] == method
    model = load_detector(out)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    probs = model.fake_probability(images)
    assert probs.shape == (4,)
    assert torch.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temporary output left behind"


def _assert_close(merged: dict, expected: dict) -> None:
    assert set(merged) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")


def test_linear_matches_weighted_average(merges, family):
    sds = canonical_inputs(family)
    total = sum(WEIGHTS)
    expected = {k: sum(w * sds[f"ft{i}"][k] for i, w in enumerate(WEIGHTS)) / total for k in sds["ft0"]}
    _assert_close(tensors(merges["linear"][1]), expected)


def test_task_arithmetic_matches_definition(merges, family):
    sds = canonical_inputs(family)
    base = sds["base"]
    expected = {k: base[k] + sum(w * (sds[f"ft{i}"][k] - base[k]) for i, w in enumerate(WEIGHTS)) for k in base}
    _assert_close(tensors(merges["task_arithmetic"][1]), expected)


def _ties_reference(base: torch.Tensor, fts: list[torch.Tensor], density: float) -> torch.Tensor:
    kept = []
    for ft, w in zip(fts, WEIGHTS):
        delta = (ft - base).flatten()
        k = max(1, int(density * delta.numel()))
        threshold = delta.abs().sort(descending=True).values[k - 1]
        trimmed = torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))
        kept.append(trimmed * w)
    stacked = torch.stack(kept)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(stacked) == elected).float()
    weights = torch.tensor(WEIGHTS).unsqueeze(1)
    divisor = (weights * agree).sum(0)
    divisor[divisor == 0] = 1
    return base + ((stacked * agree).sum(0) / divisor).reshape(base.shape)


def test_ties_matches_trim_elect_merge(merges, family):
    sds = canonical_inputs(family)
    expected = {k: _ties_reference(sds["base"][k], [sds[f"ft{i}"][k] for i in range(3)], 0.5) for k in sds["base"]}
    _assert_close(tensors(merges["ties"][1]), expected)


def _slerp_reference(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if torch.equal(a, b):
        return a
    ua, ub = a.flatten() / a.norm(), b.flatten() / b.norm()
    dot = float((ua * ub).sum().clamp(-1, 1))
    if abs(dot) > 0.9995:
        return (1 - t) * a + t * b
    theta = math.acos(dot)
    return (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)


def test_slerp_matches_formula(merges, family):
    sds = canonical_inputs(family)
    base = {k: v for k, v in sds["base"].items()}
    base["head.weight"], base["head.bias"] = sds["ft0"]["head.weight"], sds["ft0"]["head.bias"]  # mean of one head
    expected = {k: _slerp_reference(0.3, base[k], sds["ft0"][k]) for k in base}
    _assert_close(tensors(merges["slerp"][1]), expected)


def test_model_stock_matches_paper_formula(merges, family):
    sds = canonical_inputs(family)
    expected = {}
    for key, w0 in sds["base"].items():
        offsets = [(sds[f"ft{i}"][key] - w0).flatten() for i in range(3)]
        cosines = [
            torch.dot(offsets[i], offsets[j]) / (offsets[i].norm() * offsets[j].norm()).clamp(min=1e-6)
            for i in range(3)
            for j in range(i + 1, 3)
        ]
        cos = torch.stack(cosines).clamp(-1, 1).mean()
        t = 3 * cos / (1 + 2 * cos)
        average = sum(sds[f"ft{i}"][key] for i in range(3)) / 3
        expected[key] = t * average + (1 - t) * w0
    _assert_close(tensors(merges["model_stock"][1]), expected)


def test_dare_linear_seeded_drops_and_rescales(merges, family):
    sds = canonical_inputs(family)
    proc_a, out_a = merges["dare_seeded_a"]
    proc_b, out_b = merges["dare_seeded_b"]
    assert proc_a.returncode == 0 and proc_b.returncode == 0, proc_a.stderr[-2000:]
    merged_a, merged_b = tensors(out_a), tensors(out_b)
    kept_total = numel_total = 0
    for key, base in sds["base"].items():
        assert torch.equal(merged_a[key], merged_b[key]), f"{key}: same seed, different result"
        delta = (sds["ft0"][key] - base).flatten()
        change = (merged_a[key] - base).flatten()
        kept = change.abs() > 1e-7 * (1 + base.flatten().abs())
        # Kept entries are the task vector times one per-tensor factor: the L1 rescale |delta| / |kept delta|.
        factor = delta.abs().sum() / delta[kept].abs().sum()
        torch.testing.assert_close(change[kept], WEIGHTS[0] * factor * delta[kept], rtol=1e-4, atol=1e-6)
        kept_total += int(kept.sum())
        numel_total += delta.numel()
    fraction = kept_total / numel_total
    assert abs(fraction - 0.5) < 5 * math.sqrt(0.25 / numel_total), fraction


def test_head_policy_is_logged_in_output(merges):
    log = json.loads((merges["ties"][1] / "merge_log.json").read_text())
    events = "\n".join(log["events"])
    assert "base model" in events and "has no head" in events
    assert "['fake', 'real']" in events  # the reversed-label ingredient was aligned
    assert "1 logit(s)" in events
