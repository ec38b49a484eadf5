"""Helpers for plugin tests: tiny detector families, recipes for every mergekit method, real mergekit runs."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from mergekit_clip.detector.io import create_detector, read_state_dict, save_detector
from mergekit_clip.detector.spec import HeadSpec

BIN = Path(sys.executable).parent
ALL_METHODS = (
    "linear", "slerp", "nuslerp", "multislerp", "karcher", "passthrough", "model_stock", "arcee_fusion",
    "nearswap", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
    "della", "della_linear", "sce", "ram", "ramplus_tl",
)  # fmt: skip
WEIGHTS = (1.0, 0.7, 0.5)


def finetune_of(model, seed: int, scale: float = 0.02):
    """Simulate a fine-tune: the same backbone plus small seeded noise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * (p.std() if p.numel() > 1 else 1.0))
        if model.head is not None:
            model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=gen) * 0.5)
            model.head.bias.copy_(torch.randn(model.head.bias.shape, generator=gen) * 0.1)
    return model


def build_open_clip_family(root: Path, spec, heads: list[HeadSpec], base_head: bool) -> dict[str, Path]:
    """A base (bare or with a head) and one fine-tune per head spec, all from one random backbone."""
    base_spec = spec if base_head else spec.model_copy(update={"head": None})
    base = create_detector(base_spec, seed=0)
    save_detector(base, root / "base", provenance={"role": "base"})
    paths = {"base": root / "base"}
    for i, head in enumerate(heads):
        model = create_detector(spec.model_copy(update={"head": head}), seed=0)
        model.visual.load_state_dict(base.visual.state_dict())
        finetune_of(model, seed=100 + i)
        save_detector(model, root / f"ft{i}", provenance={"role": "ingredient", "seed": i})
        paths[f"ft{i}"] = root / f"ft{i}"
    return paths


def recipe(method: str, base: Path, models: list[Path]) -> dict:
    """A valid mergekit recipe for ``method`` over a base and fine-tunes (absolute paths)."""
    b, ms = str(base), [str(m) for m in models]
    weighted = [{"model": m, "parameters": {"weight": w}} for m, w in zip(ms, WEIGHTS)]
    sparse = [{"model": m, "parameters": {"weight": w, "density": 0.5}} for m, w in zip(ms, WEIGHTS)]
    cfg: dict = {"merge_method": method, "dtype": "float32"}
    if method == "linear":
        cfg["models"] = weighted
    elif method in ("slerp", "nearswap"):
        cfg.update(base_model=b, models=[{"model": b}, {"model": ms[0]}], parameters={"t": 0.3})
    elif method == "arcee_fusion":
        cfg.update(base_model=b, models=[{"model": b}, {"model": ms[0]}])
    elif method == "nuslerp":
        cfg.update(base_model=b, models=weighted[:2])
    elif method == "multislerp":
        cfg.update(base_model=b, models=weighted)
    elif method == "karcher":
        cfg["models"] = [{"model": m} for m in ms]
    elif method == "passthrough":
        cfg["models"] = [{"model": ms[0]}]
    elif method in ("model_stock", "ram", "ramplus_tl", "sce"):
        cfg.update(base_model=b, models=[{"model": m} for m in ms])
        if method == "sce":
            cfg["parameters"] = {"select_topk": 0.5}
    elif method == "task_arithmetic":
        cfg.update(base_model=b, models=weighted)
    elif method in ("breadcrumbs", "breadcrumbs_ties"):
        cfg.update(
            base_model=b,
            models=[
                {"model": m, "parameters": {"weight": w, "density": 0.8, "gamma": 0.05}} for m, w in zip(ms, WEIGHTS)
            ],
        )
    elif method in ("della", "della_linear"):
        cfg.update(
            base_model=b,
            models=[
                {"model": m, "parameters": {"weight": w, "density": 0.5, "epsilon": 0.1}} for m, w in zip(ms, WEIGHTS)
            ],
        )
    else:  # ties, dare_ties, dare_linear
        cfg.update(base_model=b, models=sparse)
    return cfg


def mergekit_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def run_mergekit_yaml(cfg: dict, workdir: Path, name: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
    """Run the stock ``mergekit-yaml`` console script in a real subprocess."""
    workdir.mkdir(parents=True, exist_ok=True)
    recipe_file = workdir / f"{name}.yml"
    recipe_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [str(BIN / "mergekit-yaml"), str(recipe_file), str(workdir / name), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, env=mergekit_env(**env), timeout=600)


def run_many(jobs: dict[str, tuple], workers: int = 2) -> dict[str, subprocess.CompletedProcess]:
    """Run ``name -> (cfg, workdir, *flags)`` jobs, two processes at a time (the machine has 2 cores)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            name: pool.submit(run_mergekit_yaml, cfg, wd, name, *flags) for name, (cfg, wd, *flags) in jobs.items()
        }
        return {name: f.result() for name, f in futures.items()}


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(path)


def assert_bitwise(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal raw bit patterns: tells -0.0 from +0.0 and compares NaNs, unlike torch.equal."""
    assert a.dtype == b.dtype and a.shape == b.shape
    as_int = {torch.float32: torch.int32, torch.float64: torch.int64}.get(a.dtype, torch.int16)
    assert torch.equal(a.contiguous().reshape(-1).view(as_int), b.contiguous().reshape(-1).view(as_int))
