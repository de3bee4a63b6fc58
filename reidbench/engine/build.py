"""Public builders (fast-reid's ``build_*`` split): everything a run is made of, from a Recipe.

The trainer, ``test``, ``bench``, ``regress`` and the tests build through these functions; none of them
reaches into the trainer's internals. Seeding order matters for exact reproducibility: a run calls
``seed_everything`` first, then ``load_split``, ``build_model``, ``build_losses``, ``build_train_loader``,
``build_optimizer`` and ``build_scheduler`` in that order (see ``Trainer.__init__``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidbench import paths
from reidbench.data.loader import train_loader
from reidbench.data.parsers import Subset, parse_dataset
from reidbench.data.records import Split
from reidbench.data.registry import get_dataset
from reidbench.engine.optim import build_optimizer, build_scheduler
from reidbench.errors import ReidbenchError
from reidbench.losses import build_losses
from reidbench.models import create_model
from reidbench.models.contract import ReIDModel
from reidbench.models.pretrained import LoadReport, PretrainedWeightsMissing, load_pretrained
from reidbench.recipes.schema import Recipe

__all__ = ["BuiltModel", "build_losses", "build_model", "build_optimizer", "build_scheduler",
           "build_train_loader", "load_split", "resolve_device", "seed_everything"]

#: scales at which missing pretrained weights stop the run (a reproduction without them is not one)
STRICT_PRETRAINED_SCALES = ("full", "small")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(requested: str | None) -> str:
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (requested == "cpu" or requested == "cuda" or re.fullmatch(r"cuda:\d+", requested)):
        raise ReidbenchError(f"--device: expected cpu, cuda or cuda:N, got {requested!r}")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ReidbenchError(f"--device {requested}: CUDA is not available on this machine",
                             hint="use --device cpu")
    if requested.startswith("cuda:") and int(requested[5:]) >= torch.cuda.device_count():
        raise ReidbenchError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                             hint=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return requested


def load_split(recipe: Recipe, which: str, data_root: Path) -> Split:
    """The train or test dataset of a recipe: real data, or its synthetic miniature when the recipe says so.

    A missing real dataset stops with the command that installs it; nothing is substituted.
    """
    name = recipe.data.train if which == "train" else recipe.data.test
    spec = get_dataset(name)
    root = data_root
    if recipe.data.synthetic:
        from reidbench.data.parsers import locate
        from reidbench.data.synth import ensure_synthetic

        root = data_root / "synthetic" / f"{spec.name}-i{recipe.data.synthetic_ids}" \
                                         f"-k{recipe.data.synthetic_images_per_id}"
        if locate(spec, root) is None:  # to be generated: the data root must take it
            paths.check_folder(root, paths.data_root_chosen_by(data_root), "data root")
        ensure_synthetic(spec.name, root, ids=recipe.data.synthetic_ids,
                         images_per_id=recipe.data.synthetic_images_per_id, seed=0)
    subset = recipe.data.subset
    use_subset = subset.train_ids is not None or subset.test_id_fraction is not None
    split = parse_dataset(spec.name, root, recipe.data.variant,
                          Subset(subset.train_ids, subset.test_id_fraction) if use_subset else None)
    if recipe.data.synthetic and not split.synthetic:
        raise ReidbenchError(f"{split.root}: expected a synthetic miniature (manifest missing)")
    return split


@dataclass
class BuiltModel:
    model: ReIDModel
    pretrained_note: str  # what the run record and the leaderboard say about the starting weights
    pretrained_report: dict[str, Any] | None = field(default=None)


def build_model(recipe: Recipe, num_classes: int) -> BuiltModel:
    """The recipe's model; its published weights when ``model.pretrained`` asks for them.

    Missing weights stop a ``full`` or ``small`` run (exit 2, with the download command); a smoke run goes on
    from scratch and says so in its record.
    """
    options = dict(recipe.model.options)
    pretrained = bool(options.pop("pretrained", False))
    model = create_model(recipe.model.name, num_classes=num_classes, **options)
    if not pretrained:
        return BuiltModel(model, "not requested (from scratch)")
    cfg = model.pretrained_cfg
    if cfg is None:
        raise ReidbenchError(f"model.pretrained: model {recipe.model.name} has no published weights",
                             hint="set model.pretrained=false")
    try:
        report: LoadReport = load_pretrained(model, cfg)
    except PretrainedWeightsMissing as error:
        if recipe.scale in STRICT_PRETRAINED_SCALES:
            raise ReidbenchError(f"model.pretrained: {error.message}; a {recipe.scale}-scale run does not start "
                                 f"without them", hint=error.hint) from error
        return BuiltModel(model, f"requested but unavailable ({cfg.name} not in the cache): trained from "
                                 f"scratch at {recipe.scale} scale")
    return BuiltModel(model, f"loaded {report.note()}", report.as_dict())


def output_width(model: ReIDModel, output: str) -> int:
    """The width of one of a model's outputs (``aux.NAME`` for an auxiliary one), from one forward pass in
    eval mode at its default input (eval mode leaves BatchNorm statistics alone)."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(torch.zeros(2, 3, *model.default_input, device=device))
    finally:
        model.train(was_training)
    group, _, key = output.partition(".")
    value = (outputs.get("aux") or {}).get(key) if group == "aux" and key else outputs.get(output)
    if not isinstance(value, torch.Tensor):
        raise ReidbenchError(f"loss center: cannot measure the width of output {output!r} (not among the model's "
                             "test outputs)", hint="set feat_dim in the loss term")
    return int(value.shape[1])


def build_train_loader(recipe: Recipe, split: Split, rank: int = 0, world_size: int = 1, device: str = "cpu"):
    """The training DataLoader and its identity sampler."""
    return train_loader(split, recipe.data, recipe.train.seed, rank, world_size, device)
