"""How a cell's numbers are compared with the printed ones: the tolerance of each kind of number, and the
model's counts at the paper's setting.

Parameter counts and GMac describe the model a paper row names, built as the paper built it: the cell's
recipe at full scale with its row's ``set:``, the training set's number of identities (Market-1501: 751
classes) and the recipe's input size, whatever scale and ``--set`` the run itself had. So they are compared
with the printed numbers at every scale, and without training: a smoke run's synthetic miniature has fewer
identities, and smoke scale may even swap the model (BoT's small CNN).
"""

from __future__ import annotations

from typing import Any

import torch

from reidbench import leaderboard
from reidbench.data.registry import get_dataset
from reidbench.errors import ReidbenchError
from reidbench.papers.schema import Cell, Paper, metric_kind
from reidbench.recipes.loading import load_recipe
from reidbench.recipes.schema import Recipe

COUNTED = "counted"  # a number measured without training (parameters, GMac)


def paper_setting(cell: Cell) -> Recipe:
    """The cell's recipe as the paper ran it: full scale, the row's ``set:``."""
    if cell.recipe is None:
        raise ReidbenchError(f"{cell.label}: no recipe reproduces this cell")
    return load_recipe(cell.recipe, scale="full", base_overrides=cell.row.overrides)


def num_classes(recipe: Recipe) -> int:
    """The training set's number of identities, from the dataset registry."""
    spec = get_dataset(recipe.data.train)
    train = spec.variant(recipe.data.variant).train
    if train is None:
        raise ReidbenchError(f"data.train: {spec.title} has no training split to count classes from")
    return train.ids


def model_numbers(recipe: Recipe, with_gmacs: bool = True) -> dict[str, Any]:
    """Parameters (all, without classifiers, backbone) in millions of the recipe's model with the training
    set's class count, built on the meta device (nothing is allocated); GMac at the recipe's input."""
    from reidbench.models import create_model
    from reidbench.profile import parameter_counts, profile_config

    options = {k: v for k, v in recipe.model.options.items() if k != "pretrained"}
    classes = num_classes(recipe)
    with torch.device("meta"):
        model = create_model(recipe.model.name, num_classes=classes, **options)
    total, deploy, backbone = parameter_counts(model)
    numbers: dict[str, Any] = {"params_M": total / 1e6, "deploy_params_M": deploy / 1e6,
                               "backbone_params_M": backbone / 1e6, "classes": classes,
                               "input": f"{recipe.data.height}x{recipe.data.width}", "model": recipe.model.name}
    if with_gmacs:
        numbers["gmacs"] = profile_config(recipe.model.name, options, (recipe.data.height, recipe.data.width)).gmacs
    return numbers


def counted_value(cell: Cell, metric: str, numbers: dict[str, Any]) -> float:
    """A params_M or GMac value of the cell as its table counts it (the row's or table's params convention)."""
    if metric_kind(metric) == "gmacs":
        return float(numbers["gmacs"])
    key = {"total": "params_M", "deploy": "deploy_params_M", "backbone": "backbone_params_M"}
    return float(numbers[key[cell.params_convention]])


def counted_note(cell: Cell, metric: str, numbers: dict[str, Any]) -> str:
    what = "GMac" if metric_kind(metric) == "gmacs" else f"{cell.params_convention} parameters"
    return (f"{COUNTED} without training: {what} of {numbers['model']} with {numbers['classes']} classes at "
            f"{numbers['input']} (the paper's setting)")


def cell_status(paper: Paper, cell: Cell, metric: str, reported: float | None, value: float | None, scale: str,
                synthetic: bool) -> tuple[str, str]:
    """(status, tolerance text) of one metric of a cell. Counted numbers are the paper setting's at every scale,
    so they are always compared; a cell of an inconsistent pair says so before its status."""
    tolerance = paper.tolerance(cell.table, metric)
    printed = cell.printed(metric)
    if metric_kind(metric) != "accuracy":
        scale, synthetic = "full", False
    status = leaderboard.status_of(reported, value, tolerance, scale, synthetic, printed)
    if cell.inconsistency and status != leaderboard.NOT_RUN:
        status = f"paper inconsistency; {status}"
    text = tolerance.text(reported, printed) if reported is not None else tolerance.text()
    return status, text
