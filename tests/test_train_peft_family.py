"""clip-train families of the parameter-efficient modes: what the sweep saves, how mergekit merges it, resume.

One tiny family (layernorm, lora, svd_residual, bitfit x 2 seeds) trained by ``run_sweep``; merges run in process
through mergekit's ``run_merge`` (the planner ``mergekit-yaml`` calls) and, for one recipe, through the stock
``mergekit-yaml`` console script (a cold start costs ~30 s on the shared test machine: all 20 are ``slow``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from merge_support import run_many, run_mergekit_yaml
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
from train_support import make_dataset, tiny_config  # noqa: E402

from mergekit_clip.data.deepfakebench import load_frames  # noqa: E402
from mergekit_clip.data.transforms import build_eval_transform, read_image  # noqa: E402
from mergekit_clip.detector.io import load_detector, load_provenance, read_state_dict  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.modes.adaptation import FACTORS_NAME, is_layernorm_parameter  # noqa: E402

MODES = {"layernorm": "ln", "lora": "lora", "svd_residual": "svdres", "bitfit": "bitfit"}
METHODS = ("linear", "task_arithmetic", "ties", "model_stock", "slerp")
MODE_OPTIONS = {
    "layernorm": {"cosine_head": True, "temperature": 0.1, "alignment_weight": 0.1, "uniformity_weight": 0.1},
    "lora": {"rank": 2, "alpha": 4.0, "dropout": 0.1, "targets": ["q_proj", "v_proj", "out_proj", "c_fc"]},
    "svd_residual": {"rank": 1, "orthogonality_weight": 0.1, "singular_value_weight": 0.01},
}
WIDTH = 64


def _peft_config(root: Path, out: Path, **overrides) -> dict:
    cfg = tiny_config(root, out, **overrides)
    cfg["head"] = {"normalize": True}  # the layernorm options need features on the hypersphere
    cfg["mode_options"] = MODE_OPTIONS
    cfg["optim"]["lr"] = 3e-3
    return cfg


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft")
    make_dataset(root, "TinyA", seed=0)
    cfg = _peft_config(root, root / "out")
    cfg["sweep"] = {"modes": list(MODES), "seeds": [0, 1]}
    from train.sweep import run_sweep

    rows = run_sweep(TrainConfig.model_validate(cfg))
    return root, root / "out", {r["name"]: r for r in rows}


def _block_matrix(state: dict, block: int, target: str) -> torch.Tensor:
    prefix = f"visual.transformer.resblocks.{block}."
    if target in ("q_proj", "k_proj", "v_proj"):
        j = ("q_proj", "k_proj", "v_proj").index(target)
        return state[prefix + "attn.in_proj_weight"][j * WIDTH : (j + 1) * WIDTH]
    if target == "out_proj":
        return state[prefix + "attn.out_proj.weight"]
    return state[prefix + f"mlp.{target}.weight"]


def test_family_saves_dense_detectors_factors_and_provenance(family):
    root, out, rows = family
    assert sorted(rows) == sorted(f"{p}_s{s}" for p in MODES.values() for s in (0, 1))
    base = read_state_dict(out / "base")
    for mode, prefix in MODES.items():
        path = out / "ingredients" / f"{prefix}_s0"
        prov = load_provenance(path)
        assert prov["mode"] == mode
        assert 0 < prov["trainable_parameters"] and 0 < prov["trainable_share"] < 0.5
        assert set(read_state_dict(path)) == set(base)  # dense: the base's tensor names, nothing else
        with safe_open(str(path / FACTORS_NAME), framework="pt") as f:
            keys, meta = set(f.keys()), f.metadata()
        assert meta["mode"] == mode and json.loads(meta["mode_options"]) == prov.get("mode_options", {})
        assert {"head.bias"} <= keys
        if mode == "lora":
            assert "visual.transformer.resblocks.1.attn.v_proj.lora_B" in keys
            assert prov["mode_options"]["rank"] == 2
            # trainable = A (2 x 64) + B (rows x 2) per target and block, plus the head
            assert prov["trainable_parameters"] == 2 * (3 * 2 * (64 + 64) + 2 * (64 + 256)) + 2 * 64 + 2
        if mode == "svd_residual":
            assert {f"visual.transformer.resblocks.0.attn.k_proj.{f}" for f in "USV"} <= keys
            assert prov["trainable_parameters"] == 2 * 4 * (64 + 1 + 64) + 2 * 64 + 2
        if mode == "layernorm":
            assert "head.weight_direction" in keys and "visual.ln_pre.weight" in keys


def test_heldout_scores_are_those_of_the_saved_dense_detector(family):
    root, _, rows = family
    records = load_frames("TinyA", "val", json_root=root / "json", data_root=root / "data")
    labels = torch.tensor([r.label for r in records])
    from sklearn.metrics import roc_auc_score

    for name, row in rows.items():
        model = load_detector(row["path"])
        transform = build_eval_transform(model.spec.preprocess)
        probs = model.fake_probability(torch.stack([transform(read_image(r.path)) for r in records]))
        assert row["heldout"]["auc"] == pytest.approx(roc_auc_score(labels.numpy(), probs.numpy()), abs=1e-6), name
        assert row["heldout"]["auc"] > 0.7, row  # every mode learns the tiny task


def test_what_training_changed_has_the_mode_structure(family):
    _, out, _ = family
    base = read_state_dict(out / "base")
    for seed in (0, 1):
        ln = read_state_dict(out / "ingredients" / f"ln_s{seed}")
        changed = {k for k in base if not torch.equal(base[k], ln[k])}
        assert changed - {"head.weight", "head.bias"} and all(
            is_layernorm_parameter(k) for k in changed - {"head.weight", "head.bias"}
        ), changed
        bitfit = read_state_dict(out / "ingredients" / f"bitfit_s{seed}")
        assert all(k.endswith("bias") or k == "head.weight" for k in base if not torch.equal(base[k], bitfit[k]))
        lora = read_state_dict(out / "ingredients" / f"lora_s{seed}")
        svd = read_state_dict(out / "ingredients" / f"svdres_s{seed}")
        for block in range(2):
            for target in MODE_OPTIONS["lora"]["targets"]:
                delta = (_block_matrix(lora, block, target) - _block_matrix(base, block, target)).double()
                assert int(torch.linalg.matrix_rank(delta, rtol=1e-4)) <= 2, (seed, block, target)
            assert torch.equal(_block_matrix(lora, block, "k_proj"), _block_matrix(base, block, "k_proj"))
            for target in ("q_proj", "k_proj", "v_proj", "out_proj"):  # the Effort targets
                w0 = _block_matrix(base, block, target).double()
                u, s, vh = torch.linalg.svd(w0)
                main = (u[:, :-1] * s[:-1]) @ vh[:-1]  # frozen: all but the last singular component
                tuned = _block_matrix(svd, block, target).double()
                assert int(torch.linalg.matrix_rank(tuned - main, atol=1e-5, rtol=0)) == 1, (seed, block, target)
                assert int(torch.linalg.matrix_rank(tuned - w0, atol=1e-5, rtol=0)) <= 2, (seed, block, target)


def _recipe(method: str, base: Path, models: list[Path]) -> dict:
    b, ms = str(base), [str(m) for m in models]
    cfg: dict = {"merge_method": method, "dtype": "float32"}
    if method == "linear":
        cfg["models"] = [{"model": m, "parameters": {"weight": 1.0}} for m in ms]
    elif method == "slerp":
        cfg.update(base_model=b, models=[{"model": b}, {"model": ms[0]}], parameters={"t": 0.5})
    elif method == "model_stock":
        cfg.update(base_model=b, models=[{"model": m} for m in ms])
    elif method == "task_arithmetic":
        cfg.update(base_model=b, models=[{"model": m, "parameters": {"weight": 0.5}} for m in ms])
    else:  # ties
        cfg.update(base_model=b, models=[{"model": m, "parameters": {"weight": 1.0, "density": 0.5}} for m in ms])
    return cfg


def _check_merge(mode: str, method: str, merged_dir: Path, out: Path) -> None:
    merged, base = read_state_dict(merged_dir), read_state_dict(out / "base")
    assert set(merged) == set(base) and all(bool(torch.isfinite(t).all()) for t in merged.values())
    probs = load_detector(merged_dir).fake_probability(torch.zeros(2, 3, 32, 32))
    assert bool(torch.isfinite(probs).all())
    if mode == "layernorm":  # tensors no ingredient trained pass through unchanged (identity shortcut)
        for k in base:
            if not is_layernorm_parameter(k) and not k.startswith("head."):
                assert torch.equal(merged[k], base[k]), (method, k)
    if mode == "lora" and method in ("linear", "task_arithmetic"):  # a sum of two rank-2 changes: rank <= 4
        for block in range(2):
            delta = (_block_matrix(merged, block, "q_proj") - _block_matrix(base, block, "q_proj")).double()
            assert int(torch.linalg.matrix_rank(delta, rtol=1e-4)) <= 4


@pytest.mark.parametrize("mode", list(MODES))
def test_representative_methods_merge_each_mode_family(family, mode, tmp_path):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    import mergekit_clip.plugin as plugin

    plugin.register()
    _, out, _ = family
    models = [out / "ingredients" / f"{MODES[mode]}_s{s}" for s in (0, 1)]
    for method in METHODS:
        config = MergeConfiguration.model_validate(_recipe(method, out / "base", models))
        run_merge(config, str(tmp_path / method), options=MergeOptions(random_seed=0, quiet=True))
        _check_merge(mode, method, tmp_path / method, out)


def test_stock_mergekit_yaml_merges_a_lora_family(family, tmp_path):
    _, out, _ = family
    models = [out / "ingredients" / f"lora_s{s}" for s in (0, 1)]
    result = run_mergekit_yaml(_recipe("ties", out / "base", models), tmp_path, "ties", "--no-write-model-card")
    assert result.returncode == 0, result.stderr[-3000:]
    _check_merge("lora", "ties", tmp_path / "ties", out)


@pytest.mark.slow
def test_stock_mergekit_yaml_runs_every_method_on_every_mode_family(family, tmp_path):
    _, out, _ = family
    jobs = {}
    for mode, prefix in MODES.items():
        models = [out / "ingredients" / f"{prefix}_s{s}" for s in (0, 1)]
        for method in METHODS:
            jobs[f"{mode}-{method}"] = (_recipe(method, out / "base", models), tmp_path, "--no-write-model-card")
    for name, result in run_many(jobs).items():
        assert result.returncode == 0, (name, result.stderr[-3000:])
        mode, method = name.split("-")
        _check_merge(mode, method, tmp_path / name, out)


def test_resume_after_kill_is_bitwise_exact_for_the_new_modes(tmp_path, monkeypatch):
    from train.cli import main
    from train.finetune import KILL_ENV, SimulatedKill

    make_dataset(tmp_path, "TinyA")

    def config_file(name: str) -> Path:
        cfg = _peft_config(tmp_path, tmp_path / name, **{"optim.epochs": 3, "optim.grad_accum_steps": 2})
        cfg["sweep"] = {"modes": ["lora", "svd_residual", "layernorm"], "seeds": [0]}
        file = tmp_path / f"{name}.yaml"
        file.write_text(yaml.safe_dump(cfg))
        return file

    runner = CliRunner()
    assert runner.invoke(main, [str(config_file("full"))]).exit_code == 0
    killed = config_file("killed")
    monkeypatch.setenv(KILL_ENV, "1")
    result = runner.invoke(main, [str(killed)])
    assert isinstance(result.exception, SimulatedKill), result.output
    monkeypatch.delenv(KILL_ENV)
    result = runner.invoke(main, [str(killed), "--resume"])
    assert result.exit_code == 0, result.output
    for name in ("lora_s0", "svdres_s0", "ln_s0"):
        for file in ("model.safetensors", FACTORS_NAME):
            a = read_state_dict(tmp_path / "full" / "ingredients" / name / file)
            b = read_state_dict(tmp_path / "killed" / "ingredients" / name / file)
            assert set(a) == set(b)
            for key in a:
                assert torch.equal(a[key], b[key]), f"{name}/{file}: {key} differs after resume"


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process_for_the_new_modes(tmp_path):
    import os
    import subprocess

    make_dataset(tmp_path, "TinyA")
    cfg = _peft_config(tmp_path, tmp_path / "single", **{"optim.epochs": 2})
    cfg["sweep"] = {"modes": ["lora", "layernorm", "svd_residual"], "seeds": [0]}
    # alignment/uniformity pair the frames of each rank's micro-batch, so they differ across world sizes by design
    cfg["mode_options"] = {**MODE_OPTIONS, "layernorm": {"cosine_head": True}}
    file = tmp_path / "train.yaml"
    file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[1]
    commands = {
        "single": [sys.executable, "-m", "train", str(file)],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
                str(file), "--set", f"output={tmp_path / 'ddp'}"],
    }  # fmt: skip
    for name, cmd in commands.items():
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
    for name in ("lora_s0", "ln_s0", "svdres_s0"):
        assert load_provenance(tmp_path / "ddp" / "ingredients" / name)["world_size"] == 2
        a = read_state_dict(tmp_path / "single" / "ingredients" / name)
        b = read_state_dict(tmp_path / "ddp" / "ingredients" / name)
        for key in a:  # the same optimizer steps on the same samples: equal up to float summation order
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=f"{name}: {key}")
