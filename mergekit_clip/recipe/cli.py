"""``mergekit-clip recipe METHOD --family DIR [--select key=value] [--set param=value] [--out FILE]``.

    mergekit-clip recipe ties --family runs/family --select mode=full_finetune --set density=0.2 \\
        --out recipes/my_ties.yml
    mergekit-yaml recipes/my_ties.yml merges/my_ties

Writes a stock-mergekit YAML (validated with mergekit's own schema) to ``--out`` or stdout.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import yaml


def _parse_sets(items: tuple[str, ...]) -> dict:
    params = {}
    for item in items:
        if "=" not in item:
            raise click.UsageError(f"--set {item!r}: expected PARAMETER=VALUE (e.g. density=0.2)")
        key, raw = (s.strip() for s in item.split("=", 1))
        params[key] = yaml.safe_load(raw) if raw else None
    return params


@click.command("recipe", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("method")
@click.option(
    "--family", "family_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a clip-train output folder (summary.json, base/, ingredients/)",
)  # fmt: skip
@click.option(
    "--select", "selectors", multiple=True, metavar="KEY=VALUE",
    help="keep ingredients with this mode/lr/seed/dataset/name/weight_decay/augment_strength; repeat a key for "
    "any of several values; default: every ingredient",
)  # fmt: skip
@click.option("--set", "sets", multiple=True, metavar="PARAM=VALUE", help="a merge parameter (e.g. density=0.2)")
@click.option("--dtype", default="float32", show_default=True, help="mergekit dtype of the merge")
@click.option("--absolute-paths", is_flag=True, help="write absolute model paths (default: as given, ./ prefixed)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="YAML file (default stdout)")
def recipe_command(method, family_dir, selectors, sets, dtype, absolute_paths, out) -> None:
    """Write a stock-mergekit YAML merging METHOD over a clip-train family (base = the family's base/)."""
    from mergekit_clip.recipe import (
        FamilyError,
        RecipeError,
        build_recipe,
        load_family,
        parse_selectors,
        recipe_yaml,
        select_ingredients,
        validate_recipe,
    )

    try:
        family = load_family(family_dir)
        chosen = select_ingredients(family, parse_selectors(selectors))
        recipe = build_recipe(method, family, chosen, _parse_sets(sets), dtype=dtype, absolute_paths=absolute_paths)
        validate_recipe(recipe)
    except (FamilyError, RecipeError) as e:
        raise click.ClickException(str(e)) from e
    words = ["mergekit-clip", "recipe", method, "--family", str(family_dir)]
    words += [w for s in selectors for w in ("--select", s)] + [w for s in sets for w in ("--set", s)]
    command = shlex.join(words)
    target = out or "RECIPE.yml"
    header = f"written by: {command}\nrun with:   mergekit-yaml {target} OUT_DIR"
    text = recipe_yaml(recipe, header)
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    names = ", ".join(i.name for i in chosen)
    click.echo(f"wrote {out}: {method} over {len(chosen)} ingredient(s) ({names})", err=True)
