"""The study's families: build each ``clip-train`` config (study data + overrides), train or reuse it.

A family with ``config`` is trained in process with ``train.sweep.run_sweep`` under ``OUT/families/<name>``
(or its ``output``); a finished one (same resolved config) is reused as is and an interrupted one resumes.
A family with ``path`` is read as it is. ``backbone_from`` starts a family from another's first ingredient
(the demo pre-trains a tiny backbone, then fine-tunes the family from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from mergekit_clip.recipe import Family, Ingredient, load_family


@dataclass(frozen=True)
class FamilyPlan:
    name: str
    output: Path
    train_overrides: tuple[str, ...]  # --set items, in order (also printed by --dry-run)
    config_file: Path | None
    role: str

    def train_config(self):
        from train.config import load_config

        return load_config(self.config_file, list(self.train_overrides))


def _first_ingredient_dir(output: Path, config) -> Path:
    """Where ``backbone_from``'s first ingredient is (or will be): its planned name, known before training."""
    return output / "ingredients" / config.ingredients()[0].name


def plan_families(study) -> dict[str, FamilyPlan]:
    plans: dict[str, FamilyPlan] = {}
    for name, fam in study.families.items():
        if fam.path is not None:
            plans[name] = FamilyPlan(name, fam.path, (), None, fam.role)
            continue
        output = fam.output or study.output / "families" / name
        sets = [f"output={output}"]
        if fam.data == "study":
            d = study.data
            source = d.source if isinstance(d.source, str) else "[" + ",".join(d.source) + "]"
            sets += [f"data.json_root={d.json_root}", f"data.data_root={d.data_root}",
                     f"data.train_dataset={source}", f"data.val_split={d.val_split}",
                     f"data.compression={d.compression}", f"data.allow_outside_root={d.allow_outside_root}",
                     f"data.follow_symlinks={d.follow_symlinks}"]  # fmt: skip
            if d.frame_num is not None:
                sets.append(f"data.frame_num={d.frame_num}")
        if fam.backbone_from is not None:
            parent = plans[fam.backbone_from]
            sets.append(f"backbone.pretrained={_first_ingredient_dir(parent.output, parent.train_config())}")
        sets += [f"{k}={_flow(v)}" for k, v in fam.set.items()]
        plans[name] = FamilyPlan(name, output, tuple(sets), fam.config, fam.role)
    return plans


def _flow(value) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def train_command(plan: FamilyPlan) -> list[str]:
    cmd = ["clip-train", str(plan.config_file), "--resume"]
    for item in plan.train_overrides:
        cmd += ["--set", item]
    return cmd


def ensure_family(plan: FamilyPlan) -> Family:
    """Train (or resume) the family unless it is finished with this very configuration; return it."""
    if plan.config_file is None:
        return load_family(plan.output)
    from train.sweep import run_sweep

    config = plan.train_config()
    if family_finished(plan, config):
        click.echo(f"(reusing family {plan.name}: {plan.output})")
        return load_family(plan.output)
    click.echo(f"training family {plan.name} -> {plan.output} ({len(config.ingredients())} ingredients)")
    run_sweep(config, resume=True)
    return load_family(plan.output)


def family_finished(plan: FamilyPlan, config=None) -> bool:
    """The family exists (or needs no training) and was trained with this very configuration."""
    if plan.config_file is None:
        return True
    from train.config import dump_config

    config = config or plan.train_config()
    resolved = plan.output / "config.resolved.yaml"
    if not ((plan.output / "summary.json").exists() and resolved.exists()):
        return False
    return yaml.safe_load(resolved.read_text()) == yaml.safe_load(dump_config(config))


def planned_family(plan: FamilyPlan) -> Family:
    """The family as it will be once trained (names and sweep points from the config): for --dry-run."""
    if plan.config_file is None or (plan.output / "summary.json").exists():
        try:
            return load_family(plan.output)
        except ValueError:
            if plan.config_file is None:
                raise
    config = plan.train_config()
    ingredients = tuple(
        Ingredient(
            name=p.name, path=plan.output / "ingredients" / p.name, mode=p.mode, seed=p.seed, lr=p.lr,
            weight_decay=p.weight_decay, augment_strength=p.augment_strength,
            train_dataset=p.train_dataset if isinstance(p.train_dataset, str) else "+".join(p.train_dataset),
            heldout=None,
        )
        for p in config.ingredients()
    )  # fmt: skip
    return Family(root=plan.output, base=plan.output / "base", ingredients=ingredients)
