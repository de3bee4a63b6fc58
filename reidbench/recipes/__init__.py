"""Recipes: YAML files, validated against a typed schema, with `base:` inheritance, `--set`
overrides, scales (full / small / smoke) and a content hash."""

from reidbench.recipes.loading import load_recipe, recipe_hash
from reidbench.recipes.schema import Recipe

__all__ = ["Recipe", "load_recipe", "recipe_hash"]
