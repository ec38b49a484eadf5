"""Recipes from a family: stock-mergekit YAML for any registered method over a ``clip-train`` family."""

from mergekit_clip.recipe.build import (
    GENERIC_DEFAULTS,
    METHOD_DEFAULTS,
    RecipeError,
    build_recipe,
    method_parameters,
    method_spec,
    recipe_yaml,
    validate_recipe,
)
from mergekit_clip.recipe.family import (
    SELECT_KEYS,
    Family,
    FamilyError,
    Ingredient,
    load_family,
    parse_selectors,
    select_ingredients,
)

__all__ = [
    "GENERIC_DEFAULTS",
    "METHOD_DEFAULTS",
    "SELECT_KEYS",
    "Family",
    "FamilyError",
    "Ingredient",
    "RecipeError",
    "build_recipe",
    "load_family",
    "method_parameters",
    "method_spec",
    "parse_selectors",
    "recipe_yaml",
    "select_ingredients",
    "validate_recipe",
]
