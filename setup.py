"""Packaging layout (metadata lives in pyproject.toml).

The recipes and papers' tables are edited in the top-level ``recipes/`` folder; the build maps that
folder into the package as ``reidbench/recipes/shipped/`` so that an installed wheel carries them
(``reidbench.recipes.loading.shipped_recipes_dir`` finds that copy, or the top-level folder in a checkout).
Data-only folders are namespace packages, so setuptools ships their files without warnings.
"""

from setuptools import find_namespace_packages, setup

SHIPPED_RECIPES = "reidbench.recipes.shipped"
NOT_PACKAGES = ["*.__pycache__"]

setup(
    packages=[
        *find_namespace_packages(include=["reidbench", "reidbench.*"], exclude=NOT_PACKAGES),
        SHIPPED_RECIPES,
        *(f"{SHIPPED_RECIPES}.{name}" for name in find_namespace_packages(where="recipes", exclude=NOT_PACKAGES)),
    ],
    package_dir={SHIPPED_RECIPES: "recipes"},
    package_data={"reidbench": ["data/lists/*/*.list"], SHIPPED_RECIPES: ["*/*.yaml"]},
)
