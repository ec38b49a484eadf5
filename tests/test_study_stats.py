"""A study with data-aware candidates computes their merge statistics first and reuses them while fresh."""

from __future__ import annotations

import pytest
from safetensors import safe_open
from study_support import make_dataset, make_family

from mergekit_clip.stats.store import stats_path
from study.config import StudyConfig

SELECT = {"mode": "full_finetune", "lr": 1e-3}


def _study(root, **merges) -> StudyConfig:
    return StudyConfig.model_validate({
        "output": str(root / "out"),
        "data": {"json_root": str(root / "json"), "data_root": str(root / "data"), "source": "Tiny-FF",
                 "test": ["Tiny-A"]},
        "families": {"tiny": {"path": str(root / "family")}},
        "merges": merges,
        "eval": {"batch_size": 16, "workers": 0},
        "stats": {"max_frames": 6},
        "bootstrap": {"n_boot": 20},
    })  # fmt: skip


@pytest.fixture()
def root(tmp_path, tiny_spec):
    make_family(tmp_path / "family", tiny_spec)
    for i, name in enumerate(["Tiny-FF", "Tiny-A"]):
        make_dataset(tmp_path / "json", tmp_path / "data", name, videos=3, frames=2, seed=i)
    return tmp_path


def test_regmean_and_fisher_candidates_get_their_statistics_then_reuse_them(root):
    from study.runner import run_study

    study = _study(root, regmean={"select": SELECT}, fisher={"select": SELECT}, ties={"select": SELECT})
    doc = run_study(study, progress=False)
    chosen = ["ft_lr1e-3_s0", "ft_lr1e-3_s1"]
    for name in chosen:
        for kind in ("gram", "fisher"):
            path = stats_path(root / "family" / "ingredients" / name, kind)
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
            # the ingredient's own training data, capped as the study file says
            assert (meta["dataset"], meta["split"], meta["frames"], meta["max_frames"]) == ("Tiny-FF", "train", "6",
                                                                                            "6")  # fmt: skip
    # ingredients no data-aware candidate merges get none
    assert not stats_path(root / "family" / "ingredients" / "lp_s0", "gram").exists()
    assert {m["group"] for m in doc["models"].values() if m["kind"] == "merge"} == {"regmean", "fisher", "ties"}

    from study.runner import StudyRun

    run = StudyRun(study, progress=False)
    run.prepare()
    result = run.validation()
    assert run.stats_counts == {"computed": 0, "reused": 4}
    assert result.merges == {"reused": 3, "merged": 0}


def _set_preprocess_mean(root, study):
    import json

    for name in ("ft_lr1e-3_s0", "ft_lr1e-3_s1"):
        config = root / "family" / "ingredients" / name / "config.json"
        cfg = json.loads(config.read_text())
        cfg["preprocess"]["mean"] = [0.5, 0.5, 0.5]  # same weights, other inputs: other activations
        config.write_text(json.dumps(cfg))
    return study


# each input a statistics file is computed from; changing one must recompute it, not reuse a stale file
CHANGES = {
    "cap": lambda root, s: s.model_copy(update={"stats": s.stats.model_copy(update={"max_frames": 4})}),
    "frames per video": lambda root, s: s.model_copy(update={"data": s.data.model_copy(update={"frame_num": 1})}),
    "compression": lambda root, s: s.model_copy(update={"data": s.data.model_copy(update={"compression": "c40"})}),
    "fisher label": lambda root, s: s.model_copy(update={"stats": s.stats.model_copy(update={"fisher_label": "true"})}),
    "preprocessing": _set_preprocess_mean,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_stale_statistics_are_recomputed(root, change):
    from study.runner import StudyRun

    study = _study(root, regmean={"select": SELECT}, fisher={"select": SELECT})
    run = StudyRun(study, progress=False)
    run.prepare()
    run.validation()
    assert run.stats_counts == {"computed": 4, "reused": 0}
    run = StudyRun(study, progress=False)
    run.prepare()
    run.validation()
    assert run.stats_counts == {"computed": 0, "reused": 4}
    run = StudyRun(CHANGES[change](root, study), progress=False)
    run.prepare()
    run.validation()
    stale = 2 if change == "fisher label" else 4  # the label rule is Fisher's alone: the Gram files stay fresh
    assert run.stats_counts == {"computed": stale, "reused": 4 - stale}


def test_dry_run_prints_the_stats_commands_before_the_merges(root):
    from study.dryrun import plan_commands

    lines = plan_commands(_study(root, fisher={"select": SELECT}))
    stats = [i for i, line in enumerate(lines) if line.startswith("mergekit-clip stats")]
    merges = [i for i, line in enumerate(lines) if line.startswith("mergekit-yaml")]
    assert len(stats) == 2 and stats[-1] < merges[0]
    assert "--kind fisher --dataset Tiny-FF --split train" in lines[stats[0]] and "--max-frames 6" in lines[stats[0]]
