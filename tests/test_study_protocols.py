"""Selection protocols: the study file's checks, no protocol reads a test label, a dev set may not overlap a test
set, held-out-forgery families are retrained and paired, and proxy quality (tau, rho, regret) is right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from study_support import make_dataset, make_family
from train_support import tiny_config

from study.config import StudyConfig

TESTS = ["Tiny-A", "Tiny-B"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("protocols")
    make_family(root / "family", tiny_spec)
    for i, name in enumerate(["Tiny-FF", *TESTS, "Tiny-DEV"]):
        make_dataset(root / "json", root / "data", name, videos=4, frames=2, seed=i)
    # a "dev set" that lists Tiny-A's test videos
    leak = json.loads((root / "json" / "Tiny-A.json").read_text())["Tiny-A"]
    leak = {group: {"test": splits["test"]} for group, splits in leak.items()}
    (root / "json" / "Tiny-LEAK.json").write_text(json.dumps({"Tiny-LEAK": leak}))
    return root


def _raw(world, out, **selection) -> dict:
    return {
        "name": "tiny", "output": str(out),
        "data": {"json_root": str(world / "json"), "data_root": str(world / "data"), "source": "Tiny-FF",
                 "test": TESTS},
        "families": {"tiny": {"path": str(world / "family")}},
        "merges": {"task_arithmetic": {"grid": {"lambda": [0.5, 1.0]}, "select": {"mode": "full_finetune"}}},
        "soups": {"uniform": {"select": {"mode": "full_finetune"}}},
        "selection": selection,
        "eval": {"batch_size": 16, "workers": 0},
        "bootstrap": {"n_boot": 40},
    }  # fmt: skip


class LabelReadError(AssertionError):
    pass


class _NoLabel:
    """A test-split frame record whose label cannot be read."""

    def __init__(self, record):
        self.path, self.video_id, self.dataset = record.path, record.video_id, record.dataset

    @property
    def label(self):
        raise LabelReadError(f"a test label was read: {self.dataset} {self.path}")


@pytest.fixture()
def test_labels_raise(monkeypatch):
    """Every reader of a test set (the held-out sets' and the source's test split) gets records whose ``label``
    raises; everything else (a dev set's split of any name) reads normally."""
    import mergekit_clip.data.formats as formats

    original = formats.load_frames
    reads: list[tuple[str, str]] = []

    def guarded(dataset, split, **kw):
        records = original(dataset, split, **kw)
        reads.append((dataset, split))
        return [_NoLabel(r) for r in records] if split == "test" and dataset in [*TESTS, "Tiny-FF"] else records

    monkeypatch.setattr(formats, "load_frames", guarded)
    return reads


# ---------------------------------------------------------------- the study file


@pytest.mark.parametrize(
    "selection, message",
    [
        ({"protocols": {"dev": {"datasets": ["Tiny-DEV"], "hold_out": ["FF-NT"]}}}, "belong to another kind"),
        ({"protocols": {"dev": {"datasets": ["Tiny-A"]}}}, "must not be a test set"),
        ({"protocols": {"dev": {"datasets": ["Tiny-FF"]}}}, "must not be a test set"),
        ({"protocols": {"dev": {}}}, "name the labelled development datasets"),
        ({"protocols": {"entropy": {"kind": "target_unlabelled"}}, "protocol": "entropy"}, "transductive"),
        ({"protocols": {"t": {"kind": "target_unlabelled", "metric": "video_auc"}}}, "reads no labels"),
        ({"protocols": {"dev": {"datasets": ["Tiny-DEV"], "metric": "auc"}}}, "choose a registered metric"),
        ({"protocols": {"mine": {"datasets": ["Tiny-DEV"]}}}, "set kind to one of"),
        ({"protocol": "dev"}, "choose from ['source_val']"),
        ({"protocols": {"held_out_forgery": {"hold_out": ["FF-NT"]}}}, "no family is trained on the source"),
        ({"protocols": {"perturbed_val": {"perturbations": ["nope:3"]}}}, "nope"),
    ],
)
def test_study_file_refuses_bad_protocols(world, tmp_path, selection, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        StudyConfig.model_validate(_raw(world, tmp_path / "out", **selection))


def test_unknown_protocol_key_is_refused_with_a_suggestion(world, tmp_path):
    from study.config import StudyConfigError, load_study

    raw = _raw(world, tmp_path / "out", protocols={"dev": {"datasets": ["Tiny-DEV"], "splt": "test"}})
    file = tmp_path / "s.yml"
    file.write_text(yaml.safe_dump(raw))
    with pytest.raises(StudyConfigError, match="unknown key 'selection.protocols.dev.splt': did you mean 'split'"):
        load_study(file)


# ---------------------------------------------------------------- no protocol reads a test label


def test_no_protocol_reads_a_test_label(world, tmp_path, test_labels_raise):
    from study.protocols import score_protocols, transductive_protocols
    from study.runner import StudyRun

    study = StudyConfig.model_validate(_raw(world, tmp_path / "out", protocols={
        "dev": {"datasets": ["Tiny-DEV"], "split": "test", "metric": "log_loss"},
        "perturbed_val": {"perturbations": ["GB:9", "CC:0.6"]},
        "entropy": {"kind": "target_unlabelled"},
    }))  # fmt: skip
    run = StudyRun(study, progress=False)
    run.prepare()
    result = run.validation()  # every honest protocol, then selection
    assert set(result.proxies) == {"source_val", "dev", "perturbed_val"}
    assert ("Tiny-A", "test") in test_labels_raise  # the dev overlap check read the test frames' paths
    names = [e.name for e in result.entries]
    for name, proxy in result.proxies.items():
        assert set(proxy.scores) == set(names) and all(math.isfinite(v) for v in proxy.scores.values()), name
    # dev log_loss is negated (higher is better): its value is minus the mean log loss on the dev frames
    from mergekit_clip.metrics import binary_log_loss_error

    entry = result.entries[0]
    dev = run.score(entry, [("Tiny-DEV", "test")])[("Tiny-DEV", "test")]
    assert result.proxies["dev"].scores[entry.name] == pytest.approx(-binary_log_loss_error(dev.labels, dev.scores))
    # the transductive protocol scores the test frames from their paths alone (no score file exists yet)
    assert not list((tmp_path / "out" / "scores").rglob("Tiny-A__test__*"))
    trans = score_protocols(run, result.entries, transductive_protocols(study))["entropy"]
    assert trans.transductive and all(v <= 0 for v in trans.scores.values())
    with pytest.raises(LabelReadError):  # the guard does bite: the labelled test scores read labels
        run.testing(result.entries)


def test_dev_set_sharing_test_videos_is_refused(world, tmp_path):
    from study.protocols.dev import DevOverlapError
    from study.runner import StudyRun

    study = StudyConfig.model_validate(_raw(world, tmp_path / "out", protocols={
        "dev": {"datasets": ["Tiny-LEAK"], "split": "test"}}))  # fmt: skip
    run = StudyRun(study, progress=False)
    run.prepare()
    with pytest.raises(DevOverlapError, match=r"dev set Tiny-LEAK/test shares video '.*Tiny-A/test.*' with test set "
                                              r"Tiny-A/test"):  # fmt: skip
        run.validation()


# ---------------------------------------------------------------- proxy quality


def test_rank_correlations_match_scipy_with_ties():
    import scipy.stats

    from study.proxy_quality import kendall_tau_b, spearman_rho

    proxy = np.array([1.0, 1.0, 0.9, 0.7, 0.7, 0.4, 0.2, 0.95])
    held = np.array([[0.81, 0.80, 0.83, 0.70, 0.72, 0.65, 0.66, 0.80],
                     [0.50, 0.55, 0.55, 0.60, 0.61, 0.70, 0.71, 0.52]])  # fmt: skip
    for row in held:
        assert kendall_tau_b(proxy, row) == pytest.approx(scipy.stats.kendalltau(proxy, row).statistic, abs=1e-12)
        assert spearman_rho(proxy, row) == pytest.approx(scipy.stats.spearmanr(proxy, row).statistic, abs=1e-12)
    np.testing.assert_allclose(kendall_tau_b(proxy, held), [scipy.stats.kendalltau(proxy, r).statistic for r in held])
    assert math.isnan(float(kendall_tau_b(np.ones(4), np.arange(4.0))))  # a constant proxy ranks nothing


def test_proxy_quality_regret_and_intervals():
    from study.proxy_quality import overall_pick, proxy_quality

    proxy = {"a": 0.9, "b": 0.9, "c": 0.5, "d": float("nan")}
    ties = {"a": -0.3, "b": -0.2, "c": 0.0, "d": 0.0}  # b wins the tie on a
    pick = overall_pick(list(proxy), proxy, ties)
    assert pick == "b"
    held = {"a": 0.80, "b": 0.70, "c": 0.75, "d": 0.99}  # d is not scored: neither oracle nor counted
    rng = np.random.default_rng(0)
    resampled = {m: v + rng.normal(0, 0.01, 200) for m, v in held.items()}
    q = proxy_quality(proxy, pick, held, resampled)
    assert q["models"] == 3 and q["oracle"] == "a"
    assert q["regret"]["estimate"] == pytest.approx(0.10)
    boot = np.stack([resampled[m] for m in "abc"], 1)
    expected = np.quantile(boot.max(1) - resampled["b"], [0.025, 0.975])
    assert [q["regret"]["low"], q["regret"]["high"]] == pytest.approx(list(expected))
    assert q["kendall_tau"]["low"] <= q["kendall_tau"]["estimate"] <= q["kendall_tau"]["high"]


# ---------------------------------------------------------------- held-out forgery (trains two tiny families)


def _ff_dataset(json_root: Path, data_root: Path, name: str, seed: int = 0) -> None:
    """FaceForensics++-like: a real group and two forgery groups with their own artefact (DF red, NT blue)."""
    import cv2

    rng = np.random.default_rng(seed)
    tint = {"FF-real": (0, 0, 0), "FF-DF": (70, 0, 0), "FF-NT": (0, 0, 70)}
    groups: dict = {}
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        for group, colour in tint.items():
            for v in range(count):
                video = f"{name}/{group}/{split}_{v}"
                frames = []
                for f in range(2):
                    img = np.clip(rng.integers(40, 170, (32, 32, 3)) + np.array(colour), 0, 255).astype(np.uint8)
                    (data_root / video).mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(data_root / video / f"{f}.png"), img)
                    frames.append(f"{video}/{f}.png")
                groups.setdefault(group, {}).setdefault(split, {})[f"{v:03d}"] = {"label": group, "frames": frames}
    json_root.mkdir(parents=True, exist_ok=True)
    (json_root / f"{name}.json").write_text(json.dumps({name: groups}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A study whose family is trained from a clip-train config, with a held_out_forgery protocol, run once."""
    from study.runner import run_study

    root = tmp_path_factory.mktemp("held_out")
    _ff_dataset(root / "json", root / "data", "Tiny-FF")
    for i, name in enumerate(TESTS):
        make_dataset(root / "json", root / "data", name, videos=4, frames=2, seed=10 + i)
    config = tiny_config(root, root / "unused", **{"optim.epochs": 1, "sweep.seeds": [0, 1]})
    (root / "family.yaml").write_text(yaml.safe_dump(config))
    raw = {
        "name": "hof", "output": str(root / "out"),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": "Tiny-FF",
                 "test": TESTS},
        "families": {"tiny": {"config": str(root / "family.yaml")}},
        "merges": {"task_arithmetic": {"grid": {"lambda": [0.5, 1.0]}},
                   "ta_search": {"method": "task_arithmetic",
                                 "search": {"space": {"lambda": [0.3, 1.2]}, "trials": 2}}},
        "soups": {"uniform": {}},
        "selection": {"protocols": {"nt": {"kind": "held_out_forgery", "hold_out": ["FF-NT"]}}, "protocol": "nt"},
        "eval": {"batch_size": 16, "workers": 0},
        "bootstrap": {"n_boot": 40},
    }  # fmt: skip
    study = StudyConfig.model_validate(raw)
    return root, study, run_study(study, progress=False)


def test_held_out_forgery_retrains_without_the_group_and_pairs_every_model(trained):
    root, study, doc = trained
    out = study.output / "protocols" / "nt"
    derived = json.loads((out / "json" / "Tiny-FF-without-FF-NT.json").read_text())["Tiny-FF-without-FF-NT"]
    assert sorted(derived) == ["FF-DF", "FF-real"]
    only = json.loads((out / "json" / "Tiny-FF-only-FF-NT.json").read_text())["Tiny-FF-only-FF-NT"]
    assert sorted(only) == ["FF-NT", "FF-real"]
    resolved = yaml.safe_load((out / "families" / "tiny" / "config.resolved.yaml").read_text())
    assert resolved["data"]["train_dataset"] == "Tiny-FF-without-FF-NT"
    protocol = doc["protocols"]["nt"]
    report = (study.output / "report.md").read_text()
    assert doc["selection_protocol"] == "nt" and "Selection protocol for the verdicts: **nt**" in report
    assert "| group | selected by nt | nt video_auc |" in report and "frame Δ vs nt-picked ingredient" in report
    assert set(protocol["counterparts"]) == set(doc["models"])  # every model has its counterpart
    assert protocol["counterparts"]["task_arithmetic[lambda=1.0]"] == "task_arithmetic[lambda=1.0]"
    summary = json.loads((out / "families" / "tiny" / "summary.json").read_text())
    assert {row["train_dataset"] for row in summary} == {"Tiny-FF-without-FF-NT"} and len(summary) == 2
    # a model's proxy score is its counterpart's video AUC on the NT fakes against the source's val reals
    from sklearn.metrics import roc_auc_score

    from study.protocols.held_out_forgery import shadow_study
    from study.runner import StudyRun

    shadow, _ = shadow_study(study, "nt", study.selection.all_protocols()["nt"], write=False)
    sub = StudyRun(shadow, progress=False)
    sub.prepare()
    from study.selection import Entry

    searched = [n for n, m in doc["models"].items() if m["group"] == "ta_search"]
    assert len(searched) == 2 and all(protocol["counterparts"][n] == n for n in searched)  # merged on demand
    for record in (out / "candidates" / "ta_search").glob("*/candidate.json"):  # a search trial's proxy is its
        made = json.loads(record.read_text())  # counterpart's (same lambda, retrained family) video AUC on NT fakes
        if made["name"] not in searched:
            continue  # the shadow's own fixed point of the group
        model = record.parent / "model"
        s = sub.score(Entry(made["name"], "merge", "ta_search", model, sub.hashes.model(model)),
                      [("Tiny-FF-only-FF-NT", "val")])[("Tiny-FF-only-FF-NT", "val")]  # fmt: skip
        videos = sorted(set(s.video_ids))
        mean = [s.scores[s.video_ids == v].mean() for v in videos]
        label = [int(s.labels[s.video_ids == v][0]) for v in videos]
        assert doc["models"][made["name"]]["proxies"]["nt"] == pytest.approx(roc_auc_score(label, mean))
        searched.remove(made["name"])
    assert not searched
    entries = [e for e in sub.validation().entries if e.group != "ta_search"]  # its shadow fixed point: no original
    for entry in entries:
        s = sub.score(entry, [("Tiny-FF-only-FF-NT", "val")])[("Tiny-FF-only-FF-NT", "val")]
        videos = sorted(set(s.video_ids))
        assert {v.split("/")[1] for v in videos} == {"FF-real", "FF-NT"}
        mean = [s.scores[s.video_ids == v].mean() for v in videos]
        label = [int(s.labels[s.video_ids == v][0]) for v in videos]
        original = next(n for n, other in protocol["counterparts"].items() if other == entry.name)
        assert doc["models"][original]["proxies"]["nt"] == pytest.approx(roc_auc_score(label, mean))
    # verdicts follow the protocol's picks
    assert {g["group"]: g["selected_on_val"] for g in doc["groups"]} == protocol["picks"]
    q = protocol["quality"]
    assert q["models"] == len(doc["models"]) and q["regret"]["estimate"] >= 0
    assert (study.output / "figures" / "proxy_vs_held_out.png").exists()


def test_held_out_forgery_dry_run_says_it_trains_the_families(trained):
    from study.dryrun import plan_commands

    root, study, _ = trained
    lines = plan_commands(study)
    note = [i for i, line in enumerate(lines) if line.startswith("# selection protocol nt (held_out_forgery)")]
    assert note and "trains these families itself" in lines[note[0]]
    train = lines[note[0] + 1]
    assert train.startswith("clip-train") and "data.train_dataset=Tiny-FF-without-FF-NT" in train
    assert any(line.startswith("mergekit-yaml") and "/protocols/nt/" in line for line in lines[note[0]:])
    assert lines[-1].startswith("# then: clip-study run")


def test_group_regret_counts_each_group_once_and_skips_unions():
    from study.proxy_quality import group_regret

    members = {"ingredients": ["i1", "i2"], "ties": ["t1", "t2", "t3"], "solo": ["s"], "any merge": ["t1", "t2", "t3"]}
    picks = {"ingredients": "i1", "ties": "t2", "solo": "s", "any merge": "t1"}
    proxy = {"i1": 1.0, "i2": 1.0, "t1": 0.5, "t2": 0.9, "t3": float("nan"), "s": 0.3}
    held = {"i1": 0.80, "i2": 0.70, "t1": 0.75, "t2": 0.72, "t3": 0.99, "s": 0.5}  # t3 unscored: not an oracle
    resampled = {m: np.full(50, v) for m, v in held.items()}
    resampled["t1"] = resampled["t1"] + np.linspace(-0.01, 0.01, 50)
    out = group_regret(members, picks, proxy, held, resampled)
    assert out["groups"] == 2 and out["oracle_picks"] == 1  # ingredients picks its oracle; ties does not
    assert out["mean_regret"]["estimate"] == pytest.approx((0.0 + 0.03) / 2)
    per_resample = (np.maximum(resampled["t1"], resampled["t2"]) - resampled["t2"]) / 2
    assert out["mean_regret"]["low"] == pytest.approx(np.quantile(per_resample, 0.025))


def test_dev_set_sharing_test_frame_files_is_refused(world, tmp_path):
    """Other video ids (a linked folder), the same frame files: still refused."""
    from study.protocols.dev import DevOverlapError
    from study.runner import StudyRun

    link = world / "data" / "Tiny-LINKED"
    if not link.exists():
        link.symlink_to(world / "data" / "Tiny-B", target_is_directory=True)
    doc = json.loads((world / "json" / "Tiny-B.json").read_text())["Tiny-B"]
    def relinked(entry):
        return {"label": entry["label"], "frames": [f.replace("Tiny-B/", "Tiny-LINKED/", 1) for f in entry["frames"]]}

    linked = {g: {"val": {v: relinked(e) for v, e in splits["test"].items()}} for g, splits in doc.items()}
    (world / "json" / "Tiny-LINKED.json").write_text(json.dumps({"Tiny-LINKED": linked}))
    study = StudyConfig.model_validate(_raw(world, tmp_path / "out", protocols={"dev": {"datasets": ["Tiny-LINKED"]}}))
    run = StudyRun(study, progress=False)
    run.prepare()
    with pytest.raises(DevOverlapError, match=r"dev set Tiny-LINKED/val shares frame file .*Tiny-B/test/.* with test "
                                              r"set Tiny-B/test"):  # fmt: skip
        run.validation()


def test_compare_protocols_is_paired_on_the_models_both_score():
    from study.proxy_quality import compare_protocols, kendall_tau_b

    held = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    rng = np.random.default_rng(1)
    resampled = {m: v + rng.normal(0, 0.05, 300) for m, v in held.items()}
    good = {"a": 4.0, "b": 3.0, "c": 2.0, "d": float("nan")}  # d unscored: both taus over a, b, c
    bad = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    members = {"g": ["a", "b", "c"]}
    out = compare_protocols(good, bad, held, resampled, within=(members, {"g": "a"}, {"g": "c"}))
    assert out["models"] == 3 and out["kendall_tau"]["estimate"] == pytest.approx(2.0)  # +1 - (-1)
    boot = np.stack([resampled[m] for m in "abc"], 1)
    diff = kendall_tau_b(np.array([4.0, 3, 2]), boot) - kendall_tau_b(np.array([1.0, 2, 3]), boot)
    expected = np.quantile(diff, [0.025, 0.975])
    assert [out["kendall_tau"]["low"], out["kendall_tau"]["high"]] == pytest.approx(list(expected))
    assert out["within_group_regret"]["estimate"] == pytest.approx(0.0 - 0.2)
