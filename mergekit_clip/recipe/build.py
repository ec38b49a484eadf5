"""Write a stock-mergekit YAML recipe for a family: any registered merge method, documented defaults.

Parameters come from the method's own registry entry (``MergeMethodSpec.parameters``): a shared parameter goes
under the recipe's top-level ``parameters``, a per-input one under each model. Values, by precedence:
``--set`` > :data:`METHOD_DEFAULTS` (ours, written into the recipe so it reads on its own) > mergekit's default.
A parameter mergekit requires and nobody sets is an error that names it.

The base model is the family's shared ``base/`` for methods whose contract needs one (task arithmetic, TIES,
DARE, breadcrumbs, DELLA, model_stock, SCE, RAM, slerp, nearswap); methods that ignore a base get none.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mergekit_clip.recipe.family import Family, FamilyError, Ingredient

# Documented defaults (docs/study.md): what a recipe says when the user sets nothing. weight 1.0 everywhere;
# trimming methods keep half the task vector; normalize = weights sum to 1, so lambda alone scales the merge.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {"weight": 1.0, "normalize": True},
    "task_arithmetic": {"weight": 1.0, "normalize": True, "lambda": 1.0},
    "ties": {"weight": 1.0, "density": 0.5, "normalize": True},
    "dare_ties": {"weight": 1.0, "density": 0.5, "normalize": True},
    "dare_linear": {"weight": 1.0, "density": 0.5, "normalize": True},
    "breadcrumbs": {"weight": 1.0, "density": 0.8, "gamma": 0.01, "normalize": True},
    "breadcrumbs_ties": {"weight": 1.0, "density": 0.8, "gamma": 0.01, "normalize": True},
    "della": {"weight": 1.0, "density": 0.5, "epsilon": 0.1, "normalize": True},
    "della_linear": {"weight": 1.0, "density": 0.5, "epsilon": 0.1, "normalize": True},
    "slerp": {"t": 0.5},
    "nearswap": {"t": 0.5},
    "nuslerp": {"weight": 1.0},
    "multislerp": {"weight": 1.0},
    "sce": {"select_topk": 0.5},
}
GENERIC_DEFAULTS = {"weight": 1.0}  # any other method (new registrations): equal weights


class RecipeError(ValueError):
    """An unknown method or parameter, or a selection the method cannot merge (the message names it)."""


def _methods() -> dict[str, Any]:
    import mergekit.merge  # noqa: F401  (imports mergekit; the start-up hook registers our plugin)
    from mergekit.merge_methods import registered_methods

    from mergekit_clip.plugin import register

    register()
    return {m.spec.name: m.spec for m in registered_methods()}


def method_spec(method: str):
    """The mergekit ``MergeMethodSpec`` of ``method`` (unknown names get a did-you-mean and the full list)."""
    specs = _methods()
    if method not in specs:
        close = difflib.get_close_matches(method, list(specs), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(f"unknown merge method {method!r}: {hint}registered methods: {', '.join(sorted(specs))}")
    return specs[method]


def method_parameters(method: str) -> dict[str, str]:
    """Parameter name -> scope (``shared``, ``input`` or ``non_base``) of a registered method."""
    return {p.name: p.scope.value for p in method_spec(method).parameters}


def _model_path(path: Path, absolute: bool) -> str:
    if absolute:
        return str(path.absolute())
    text = path.as_posix()
    # mergekit reads a bare relative name such as `ft_a` as a Hugging Face repo id: keep it path-like.
    return text if text.startswith(("/", "./", "../")) else f"./{text}"


def _check_count(method: str, contract, uses_base: bool, ingredients: Sequence[Ingredient]) -> None:
    """slerp and nearswap take one model beside the base, nuslerp two or more...: say so before mergekit does."""
    most = contract.max_non_base
    if most is None and contract.max_inputs is not None:
        most = contract.max_inputs - (1 if uses_base else 0)
    least = contract.min_non_base or 1
    count = len(ingredients)
    if least <= count and (most is None or count <= most):
        return
    wanted = f"{least}" if least == most else (f"at least {least}" if count < least else f"at most {most}")
    raise RecipeError(
        f"merge method {method!r} takes {wanted} ingredient(s) beside the base; the selection has {count} "
        f"({', '.join(i.name for i in ingredients)}): narrow or widen it with --select (e.g. seed=0 lr=1e-3)"
    )


def build_recipe(
    method: str,
    family: Family,
    ingredients: Sequence[Ingredient],
    params: Mapping[str, Any] | None = None,
    *,
    dtype: str = "float32",
    absolute_paths: bool = False,
) -> dict[str, Any]:
    """The recipe (a dict that ``MergeConfiguration.model_validate`` accepts) merging ``ingredients``."""
    spec = method_spec(method)
    scopes = {p.name: p for p in spec.parameters}
    params = dict(params or {})
    for key in params:
        if key not in scopes:
            close = difflib.get_close_matches(key, list(scopes), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            names = ", ".join(sorted(scopes)) or "none"
            raise RecipeError(f"merge method {method!r} has no parameter {key!r}: {hint}its parameters: {names}")
    defaults = METHOD_DEFAULTS.get(method, GENERIC_DEFAULTS)
    values = {k: v for k, v in defaults.items() if k in scopes}
    values.update(params)
    missing = [p.name for p in spec.parameters if p.required and p.name not in values]
    if missing:
        raise RecipeError(f"merge method {method!r} needs {', '.join(missing)}: give it with --set NAME=VALUE")
    uses_base = spec.contract.base.value == "required"
    _check_count(method, spec.contract, uses_base, ingredients)
    shared = {k: v for k, v in values.items() if scopes[k].scope.value == "shared"}
    per_model = {k: v for k, v in values.items() if scopes[k].scope.value != "shared"}
    recipe: dict[str, Any] = {"merge_method": method}
    if uses_base:
        recipe["base_model"] = _model_path(family.base, absolute_paths)
    recipe["models"] = [
        {"model": _model_path(i.path, absolute_paths), **({"parameters": dict(per_model)} if per_model else {})}
        for i in ingredients
    ]
    if shared:
        recipe["parameters"] = shared
    recipe["dtype"] = dtype
    return recipe


def validate_recipe(recipe: Mapping[str, Any]):
    """Parse with mergekit's own schema (what ``mergekit-yaml`` does first); returns the MergeConfiguration."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        return MergeConfiguration.model_validate(dict(recipe))
    except ValidationError as e:
        raise RecipeError(f"mergekit rejects the recipe: {e}") from e


def recipe_yaml(recipe: Mapping[str, Any], header: str | None = None) -> str:
    text = yaml.safe_dump(dict(recipe), sort_keys=False, default_flow_style=None)
    lines = [f"# {line}" if line else "#" for line in (header or "").splitlines()]
    return "\n".join([*lines, text]) if lines else text


__all__ = [
    "FamilyError",
    "GENERIC_DEFAULTS",
    "METHOD_DEFAULTS",
    "RecipeError",
    "build_recipe",
    "method_parameters",
    "method_spec",
    "recipe_yaml",
    "validate_recipe",
]
