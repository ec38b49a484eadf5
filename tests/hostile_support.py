"""Damaged and hostile inputs: a tiny world of every file the project reads, the public commands that read each
one (in process, click's CliRunner), and the check every refusal must pass (exit 1 or 2, exactly one ``Error:``
line, no traceback, nothing written)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from click.testing import CliRunner, Result
from study_support import make_dataset, make_family

from mergekit_clip.detector.io import create_detector, save_detector

ROWS = (("ft_a", "full_finetune", 1e-3, 0), ("ft_b", "full_finetune", 1e-3, 1))


@dataclass
class World:
    root: Path

    @property
    def family(self) -> Path:
        return self.root / "family"

    @property
    def detector(self) -> Path:
        return self.root / "detector"

    @property
    def json_root(self) -> Path:
        return self.root / "json"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def out(self) -> Path:
        return self.root / "out"


def build_world(root: Path, spec) -> World:
    """A detector, a family (with RegMean statistics), DeepfakeBench JSON and CSV datasets, a recipe, a study file."""
    from mergekit_clip.detector.io import weights_hash
    from mergekit_clip.stats.store import write_stats

    world = World(root)
    save_detector(create_detector(spec, seed=3), world.detector)
    make_family(world.family, spec, rows=ROWS)
    make_dataset(world.json_root, world.data_root, "Tiny-FF", videos=2, frames=1, seed=0)
    make_dataset(world.json_root, world.data_root, "Tiny-A", videos=2, frames=1, seed=1)
    frames = json.loads((world.json_root / "Tiny-A.json").read_text())["Tiny-A"]
    rows = ["path,label,video,split"]
    for group, splits in frames.items():
        for split, videos in splits.items():
            for vid, video in videos.items():
                rows += [f"{p},{int(group.endswith('fake'))},{vid},{split}" for p in video["frames"]]
    (world.json_root / "Tiny-C.csv").write_text("\n".join(rows) + "\n")
    for name, _, _, _ in ROWS:  # Gram statistics beside each ingredient (as `mergekit-clip stats` writes them)
        ingredient = world.family / "ingredients" / name
        tensors = {"visual.proj": torch.eye(spec.backbone.width)}
        write_stats(ingredient, "gram", tensors, {"weights_sha256": weights_hash(ingredient), "input_axis": {}})
    models = [{"model": str(world.family / "ingredients" / n), "parameters": {"weight": 1.0}} for n, *_ in ROWS]
    (root / "recipe.yml").write_text(yaml.safe_dump({"merge_method": "linear", "models": models, "dtype": "float32"}))
    bare = [{"model": m["model"]} for m in models]
    (root / "regmean.yml").write_text(yaml.safe_dump({"merge_method": "regmean", "models": bare, "dtype": "float32"}))
    (root / "study.yml").write_text(yaml.safe_dump({
        "name": "tiny", "output": str(root / "study_out"),
        "data": {"json_root": str(world.json_root), "data_root": str(world.data_root), "source": "Tiny-FF",
                 "test": ["Tiny-A"]},
        "families": {"tiny": {"path": str(world.family)}},
        "merges": {"linear": {}},
        "eval": {"batch_size": 16, "workers": 0},
        "bootstrap": {"n_boot": 10},
    }))  # fmt: skip
    return world


# ---------------------------------------------------------------- the public commands, in process


def clip_eval(world: World, model: Path, dataset: str = "Tiny-A") -> Result:
    from eval.cli import main

    return CliRunner().invoke(main, ["score", str(model), "--datasets", dataset, "--json-root", str(world.json_root),
                                     "--data-root", str(world.data_root), "--out", str(world.out)])  # fmt: skip


def mergekit_yaml(world: World, recipe: Path) -> Result:
    import mergekit_clip.plugin as plugin

    plugin.register()
    from mergekit.scripts.run_yaml import main

    return CliRunner().invoke(main, [str(recipe), str(world.out), "--no-write-model-card"])


def clip_study(study_file: Path, *args: str) -> Result:
    from study.cli import main

    return CliRunner().invoke(main, ["run", str(study_file), "--quiet", *args])


def clip_train(config: Path, *args: str) -> Result:
    from train.cli import main

    return CliRunner().invoke(main, [str(config), *args])


# ---------------------------------------------------------------- the check


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its content digest."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def assert_refused(
    result: Result, *, written: list[Path] = (), names: tuple[str, ...] = (), siblings: bool = True
) -> str:
    """Exit 1 or 2, exactly one ``Error:`` line (naming each of ``names``), no traceback, none of ``written``
    exists (nor, with ``siblings``, a hidden temporary sibling of it); returns the Error line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"traceback: {type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert result.exit_code in (1, 2), result.output
    errors = error_lines(result.output)
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for name in names:
        assert name in errors[0], (name, errors[0])
    for path in written:
        assert not os.path.lexists(path), f"{path} was left behind"
        if siblings:
            assert not list(path.parent.glob(f".{path.name}.*")), f"a temporary sibling of {path} was left behind"
    return errors[0]
