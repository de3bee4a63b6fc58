"""A finished run folder as the visualisations read it: its recipe, features, model and query images."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidbench.errors import ReidbenchError
from reidbench.evaluation.features import FeatureSet
from reidbench.models.contract import ReIDModel
from reidbench.recipes.schema import EvalSection, Recipe


@dataclass
class FinishedRun:
    """A run folder written by the trainer (``run.json`` finished, ``recipe.yaml``, ``features.pt``,
    ``checkpoints/last.pt``); ``evaluation`` is the ranking a paper row asks for (default: the run's own)."""

    run_dir: Path
    evaluation: EvalSection | None = None
    _model: ReIDModel | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        record = self.run_dir / "run.json"
        if not record.is_file():
            raise ReidbenchError(f"{self.run_dir}: not a run folder (no run.json)",
                                 hint="give a folder written by `reidbench train` or `reidbench reproduce`")
        try:
            self.record: dict[str, Any] = json.loads(record.read_text())
        except ValueError as error:
            raise ReidbenchError(f"{record}: not a readable run record ({error})") from error
        if self.record.get("status") != "finished" or not (self.run_dir / "features.pt").is_file():
            raise ReidbenchError(f"{self.run_dir}: the run has not finished (status {self.record.get('status')!r})",
                                 hint="resume it with `reidbench train RECIPE --resume RUN_DIR`")

    @cached_property
    def recipe(self) -> Recipe:
        from reidbench.recipes.loading import RecipeError, build, read_mapping

        source = self.run_dir / "recipe.yaml"
        return build(Recipe, read_mapping(source, RecipeError), "", str(source))

    @property
    def settings(self) -> EvalSection:
        return self.evaluation or self.recipe.eval

    @property
    def label(self) -> str:
        return self.record.get("run_id", self.run_dir.name)

    @cached_property
    def features(self) -> FeatureSet:
        from reidbench.evaluation.features import load_features

        try:
            features = load_features(self.run_dir / "features.pt")
        except ValueError as error:
            raise ReidbenchError(str(error)) from error
        if features.query_paths is None or features.gallery_paths is None:
            raise ReidbenchError(f"{self.run_dir / 'features.pt'}: holds no image paths; the visualisations need "
                                 "them (features files written by reidbench runs have them)")
        return features

    @cached_property
    def distance(self) -> np.ndarray:
        """Query-gallery distances [Q, G] as the run (or the paper row) ranks them."""
        from reidbench.engine.features import ranking_distance

        return ranking_distance(self.features, self.settings).cpu().numpy()

    @property
    def model(self) -> ReIDModel:
        """The trained model (last checkpoint) in eval mode on the CPU."""
        if self._model is None:
            from reidbench.engine.checkpoint import load_checkpoint
            from reidbench.models import create_model
            from reidbench.models.contract import num_classes_of

            state = load_checkpoint(self.run_dir / "checkpoints" / "last.pt")["model"]
            options = {k: v for k, v in self.recipe.model.options.items() if k != "pretrained"}
            classes = num_classes_of(state, create_model(self.recipe.model.name, **options))
            model = create_model(self.recipe.model.name, num_classes=classes or 1, **options)
            model.load_state_dict(state)
            self._model = model.eval()
        return self._model

    def images(self, indices: list[int], side: str = "query", display: tuple[int, int] = (256, 128),
               erase: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """(model inputs [N, 3, H, W] as the run's test transform makes them, the same images as uint8 RGB
        [N, h, w, 3] at the ``display`` size); ``erase(image, index)`` changes an image first (both see it)."""
        from torchvision.io import ImageReadMode, decode_image, read_file
        from torchvision.transforms import v2

        from reidbench.data.transforms import eval_transform

        paths = self.features.query_paths if side == "query" else self.features.gallery_paths
        data = self.recipe.data
        to_input = eval_transform(data.transforms, data.height, data.width)
        to_display = v2.Resize(display, antialias=True)
        shown, inputs = [], []
        for index in indices:
            path = Path(paths[index])
            if not path.is_file():
                raise ReidbenchError(f"{path}: image of {side} {index} not found (the dataset moved since the run)",
                                     hint="restore the dataset at the path the run's features.pt records")
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
            if erase is not None:
                image = erase(image, index)
            shown.append(to_display(image).permute(1, 2, 0).numpy())
            inputs.append(to_input(image))
        return torch.stack(inputs), np.stack(shown)

    @cached_property
    def metrics(self) -> dict[str, float]:
        """The run's metrics in %, ranked as the paper row asks (re-evaluated when it changes the ranking)."""
        if self.evaluation is None:
            return {k: 100 * v for k, v in self.record["metrics"].items()}
        from reidbench.engine.features import evaluate_features

        return {k: 100 * v for k, v in evaluate_features(self.features, self.evaluation).summary().items()}

    def training_log(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of one key of the training records in metrics.jsonl (a loss term or ``total``)."""
        epochs, values = [], []
        for line in (self.run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and key in entry and "eval" not in entry:
                epochs.append(int(entry["epoch"]))
                values.append(float(entry[key]))
        if not epochs:
            raise ReidbenchError(f"{self.run_dir / 'metrics.jsonl'}: no training record holds {key!r}")
        return epochs, values


def valid_queries(features: FeatureSet) -> np.ndarray:
    """Indices of the queries with a right match in the gallery under the protocol (Market: another camera)."""
    same_pid = features.query_pids[:, None] == features.gallery_pids[None, :]
    if features.protocol == "market":
        same_pid &= features.query_camids[:, None] != features.gallery_camids[None, :]
    return np.flatnonzero(same_pid.any(axis=1))


def choose_queries(features: FeatureSet, count: int, seed: int, requested: list[int] | None = None) -> list[int]:
    """The queries a figure shows: those requested (checked), else ``count`` drawn by ``seed`` among the
    queries with a right match, in ascending order (the same runs and seed give the same images)."""
    total = len(features.query_pids)
    if requested:
        bad = [q for q in requested if not 0 <= q < total]
        if bad:
            raise ReidbenchError(f"--query {bad[0]}: expected a query index in 0..{total - 1}")
        return list(dict.fromkeys(requested))
    pool = valid_queries(features)
    if len(pool) == 0:
        pool = np.arange(total)
    chosen = np.random.default_rng(seed).choice(pool, size=min(count, len(pool)), replace=False)
    return sorted(int(q) for q in chosen)
