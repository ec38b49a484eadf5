"""``clip-study run STUDY.yml --dry-run``: the plan as the public commands a cluster scheduler could run.

Nothing is trained, merged or scored; the recipes the study would merge are written under ``OUT/plan/recipes/``
so each ``mergekit-yaml`` line runs as printed (on a family that does not exist yet, once ``clip-train`` ran).
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from mergekit_clip.data.synthetic import MANIFEST
from mergekit_clip.recipe import select_ingredients
from study.candidates import merge_options, plan_merges, write_recipe
from study.config import StudyConfig
from study.families import plan_families, planned_family, train_command
from study.hashing import FileHashes, recipe_key
from study.stats import plan_stats, stats_commands


def _inputs_exist(candidate) -> bool:
    paths = [m["model"] for m in candidate.recipe["models"]] + [candidate.recipe.get("base_model")]
    return all(p is None or (Path(p) / "config.json").exists() for p in paths)


def plan_commands(study: StudyConfig, study_file: str = "STUDY.yml") -> list[str]:
    """The study's steps, one shell line each, in the order they must run (lines starting # are notes)."""
    lines = []
    for step in study.synth:
        done = "  # done" if (step.out / MANIFEST).exists() else ""
        lines.append(shlex.join(["mergekit-clip", "data", "synth", str(step.out), "--preset", step.preset,
                                 "--seed", str(step.seed)]) + done)  # fmt: skip
    plans = plan_families(study)
    for plan in plans.values():
        if plan.config_file is not None:
            done = "  # done" if (plan.output / "summary.json").exists() else ""
            lines.append(shlex.join(train_command(plan)) + done)
    families = {name: planned_family(plan) for name, plan in plans.items() if plan.role == "ingredients"}
    hashes = FileHashes(study.output / "cache" / "file_hashes.json")
    recipes = study.output / "plan" / "recipes"
    models = [str(i.path) for name in study.ingredient_families() for i in families[name].ingredients]
    planned = plan_merges(study, families, None)
    lines += stats_commands(plan_stats(study, planned, families), study)
    for candidate in planned:
        if _inputs_exist(candidate):  # then its key (and so its folder) is known already
            key = recipe_key(candidate.recipe, hashes, merge_options(study))
            candidate = dataclasses.replace(candidate, key=key)
        slug = candidate.name.replace("[", "_").replace("]", "").replace(",", "_").replace("=", "")
        recipe = write_recipe(candidate, recipes / candidate.group / f"{slug}.yml")
        # an untrained family has no weights to hash yet: the plan names the folder instead of the content key
        out = candidate.model_dir(study.output) if candidate.key else study.output / "plan" / "merges" / slug
        lines.append(shlex.join(["mergekit-yaml", str(recipe), str(out), "--random-seed",
                                 str(study.mergekit.random_seed)]))  # fmt: skip
        models.append(str(out))
    for group, entry in study.merges.items():
        if entry.search is not None:
            lines.append(f"# search {group}: {entry.search.trials} Optuna trials, each merged and scored like a grid "
                         f"point; more workers: " + shlex.join(["clip-study", "search", study_file, "--group", group,
                                                                "--worker", "1"]))  # fmt: skip
    d = study.data
    data_args = ["--json-root", str(d.json_root), "--data-root", str(d.data_root), "--compression", d.compression,
                 *d.root_flags()]
    if d.frame_num is not None:
        data_args += ["--frame-num", str(d.frame_num)]
    for name, soup in study.soups.items():
        fam = families[study.family_of(soup)]
        pool = [str(i.path) for i in select_ingredients(fam, soup.select)]
        method = soup.method or name
        out = str(study.output / "plan" / "soups" / name)
        cmd = ["clip-eval", "soup", "--method", method, *pool, "--out", out]
        if method == "greedy":
            cmd += ["--val", d.sources[0], "--val-split", d.val_split, "--metric", study.selection.metric,
                    "--tie-rule", soup.tie_rule, *data_args]  # fmt: skip
        lines.append(shlex.join(cmd))
        models.append(out)
    e = study.eval
    run_args = ["--device", e.device, "--precision", e.precision, "--batch-size", str(e.batch_size),
                "--resize", e.resize]  # fmt: skip
    plan_dir = study.output / "plan"
    lines.append(shlex.join(["clip-eval", *models, "--datasets", *d.sources, "--split", d.val_split, *data_args,
                             *run_args, "--out", str(plan_dir / "eval_val"), "--overwrite"]))  # fmt: skip
    tests = list(dict.fromkeys([*d.test, *d.sources]))
    lines.append(shlex.join(["clip-eval", *models, "--datasets", *tests, "--split", d.test_split, *data_args,
                             *run_args, "--out", str(plan_dir / "eval_test"), "--overwrite"]))  # fmt: skip
    lines += protocol_lines(study, study_file)
    if study.robustness is not None:
        r = study.robustness
        perturb = [arg for spec in r.perturbations for arg in ("--perturb", spec)]
        lines.append("# after selection, the val-selected merge, soup and ingredient (REFERENCE) under perturbations:")
        lines.append(shlex.join(["clip-eval", "SELECTED_MERGE", "SELECTED_SOUP", "REFERENCE", "--datasets",
                                 *(r.datasets or d.test), "--split", d.test_split, *data_args, *run_args, *perturb,
                                 "--perturb-seed", str(r.seed), "--out", str(plan_dir / "eval_robustness"),
                                 "--overwrite"]))  # fmt: skip
    lines.append(f"# then: clip-study run {study_file}  (selects on val, bootstraps, reports; reuses every step)")
    return lines


def protocol_lines(study: StudyConfig, study_file: str) -> list[str]:
    """What each selection protocol besides source_val reads, trains or scores (nothing without protocols)."""
    from study.protocols import get_protocol

    protocols = study.selection.all_protocols()
    if len(protocols) == 1:
        return []
    lines = []
    for name, config in protocols.items():
        if name != "source_val":
            lines += get_protocol(config.kind).plan_lines(name, config, study, study_file)
    return lines + [f"# selection protocol for the verdicts: {study.selection.protocol}"]
